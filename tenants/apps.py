from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.facts import fact_source_register
        from tenants.selectors import certificate_facts

        fact_source_register("certificates", certificate_facts)
