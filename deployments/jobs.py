"""RQ jobs: thin, idempotent wrappers that load by id and call one service."""

from django.db import connection
from rq import get_current_job

from deployments import services
from deployments.models import Deployment
from tenants.audit import Actor


def deploy_job(deployment_id: int, actor_type: str, actor_name: str) -> str:
    # Running it twice is harmless: deployment_run does nothing unless the deployment is still planned.
    connection.set_schema_to_public()
    job = get_current_job()
    actor = Actor(actor_type, actor_name).via_job(job.id if job else "inline")
    deployment = Deployment.objects.get(pk=deployment_id)
    return services.deployment_run(deployment=deployment, actor=actor).status


def deployments_reap_job() -> int:
    connection.set_schema_to_public()
    return services.deployments_reap(actor=Actor.system("deployments reaper"))
