class NoAuditTablesInBare:
    """Keeps audit-middleware's tables out of the ``bare`` database; every other decision is Django's default."""

    def allow_migrate(self, db, app_label, **hints):
        if db == "bare" and app_label == "audit_middleware":
            return False
        return None
