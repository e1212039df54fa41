from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from core.facts import fact_source_register
        from deployments.selectors import deployment_facts

        fact_source_register("deployments", deployment_facts)
