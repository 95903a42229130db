"""The audit-middleware demo workspace: ``python examples/workspace_demo/run.py`` (see README)."""

from .app import create_app

__all__ = ["create_app"]
