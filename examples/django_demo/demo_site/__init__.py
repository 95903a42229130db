"""The audit-middleware Django demo: ``python examples/django_demo/run.py`` (see README)."""
