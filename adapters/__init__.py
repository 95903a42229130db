"""Framework adapters, installed as ``audit_middleware.adapters``; import them from there."""
