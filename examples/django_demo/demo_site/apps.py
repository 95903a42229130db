from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    name = "demo_site"

    def ready(self) -> None:
        from audit_middleware.adapters.django import get_auditor

        get_auditor().catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
