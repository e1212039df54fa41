"""RQ jobs: thin, idempotent wrappers that load by id and call one service, bound to their queue."""

from core.audit import Actor
from core.db import connection
from core.jobs import job
from deployments import edges, services
from deployments.models import Deployment


@job("long")
def deploy_job(deployment_id: int, actor_type: str, actor_name: str) -> str:
    # Running it twice is harmless: deployment_run does nothing unless the deployment is still planned.
    connection.set_schema_to_public()
    deployment = Deployment.objects.get(pk=deployment_id)
    return services.deployment_run(deployment=deployment, actor=Actor.for_job(actor_type, actor_name)).status


@job("default")
def deployments_reap_job() -> int:
    connection.set_schema_to_public()
    return services.deployments_reap(actor=Actor.system("deployments reaper"))


@job("default")
def target_edges_sync_job() -> str:
    """Push certificates and config to every compose target's edge (coalesced, see deployments.edges)."""
    results = edges.target_edges_sync(actor=Actor.system("edge sync"))
    failed = [r.target for r in results if r.error]
    return f"{len(results)} edge(s) synced" + (f"; failed: {', '.join(failed)}" if failed else "")
