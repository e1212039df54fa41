from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from core.facts import fact_source_register
        from deployments.selectors import deployment_facts

        fact_source_register("deployments", deployment_facts)

        from deployments.receivers import edge_changed_sync_aws
        from tenants.signals import edge_changed

        edge_changed.connect(edge_changed_sync_aws, dispatch_uid="deployments.aws_domains")
        from deployments.edges import edge_changed_receiver

        edge_changed.connect(edge_changed_receiver, dispatch_uid="deployments.target_edges")
