from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from core.facts import fact_source_register
        from deployments.selectors import deployment_facts

        fact_source_register("deployments", deployment_facts)

        from deployments.receivers import edge_changed_sync_targets
        from tenants.signals import edge_changed

        edge_changed.connect(edge_changed_sync_targets, dispatch_uid="deployments.edges")
