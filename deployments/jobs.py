"""RQ jobs: thin, idempotent wrappers that load by id and call one service, bound to their queue."""

import django_rq

from core.audit import Actor
from core.db import connection
from core.jobs import job
from deployments import services
from deployments.engines.aws_domains import aws_domains_sync
from deployments.models import Deployment, Target


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
def aws_domains_sync_job(target_id: int, actor_type: str, actor_name: str) -> str:
    """Sync one AWS target's certificates and records; runs coalesce (one per target at a time)."""
    connection.set_schema_to_public()
    target = Target.objects.filter(pk=target_id, kind=Target.Kind.AWS, is_enabled=True).first()
    if target is None:
        return "skipped"
    lock = django_rq.get_connection("default").lock(f"platform:aws-domains:{target_id}", timeout=900)
    if not lock.acquire(blocking=True, blocking_timeout=900):
        return "busy"
    try:
        result = aws_domains_sync(target=target, actor=Actor.for_job(actor_type, actor_name))
    finally:
        lock.release()
    return f"changed={result.changed}, not attached (quota)={len(result.over_quota)}"


@job("default")
def aws_domains_sync_all_job() -> int:
    """Cron: heal drift (a certificate removed by hand, a record changed) on every AWS target."""
    connection.set_schema_to_public()
    return aws_domains_sync_enqueue(actor=Actor.system("aws domains sync"))


def aws_domains_sync_enqueue(*, actor: Actor) -> int:
    """Queue a domains sync for every enabled AWS target that manages certificates or records."""
    targets = list(
        Target.objects.filter(kind=Target.Kind.AWS, is_enabled=True)
        .exclude(https_listener_arn="", hosted_zone_id="").values_list("pk", flat=True)
    )
    for pk in targets:
        aws_domains_sync_job.delay(pk, *actor.job_args)
    return len(targets)
