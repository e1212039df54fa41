"""RQ jobs: thin, idempotent wrappers that load by id and call one service, bound to their queue."""

import django_rq
from django.db import transaction

from core.audit import Actor
from core.db import connection
from core.jobs import job
from deployments import edges, services
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
    redis = django_rq.get_connection("default")
    target = Target.objects.filter(pk=target_id, kind=Target.Kind.AWS, is_enabled=True).first()
    if target is None:
        redis.delete(_PENDING.format(target_id))
        return "skipped"
    lock = redis.lock(f"platform:aws-domains:{target_id}", timeout=900)
    if not lock.acquire(blocking=True, blocking_timeout=900):
        return "busy"
    # From here on a change queues the next run: this one may have read the state before it.
    redis.delete(_PENDING.format(target_id))
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


# One queued sync per target at a time: a burst of 1,000 issuances syncs once or twice, not 1,000
# times (each run reads the whole state anyway). Expires, so a lost job cannot block syncs for long.
_PENDING = "platform:aws-domains-pending:{}"
_PENDING_SECONDS = 900


def aws_domains_sync_enqueue(*, actor: Actor) -> int:
    """Queue a domains sync (after commit) for every enabled AWS target that manages certificates
    or records, unless one is already queued and not started. Returns how many targets qualify."""
    targets = list(
        Target.objects.filter(kind=Target.Kind.AWS, is_enabled=True)
        .exclude(https_listener_arn="", hosted_zone_id="").values_list("pk", flat=True)
    )

    def queue() -> None:
        redis = django_rq.get_connection("default")
        for pk in targets:
            if redis.set(_PENDING.format(pk), actor.name[:200], nx=True, ex=_PENDING_SECONDS):
                aws_domains_sync_job.delay(pk, *actor.job_args)

    if targets:
        transaction.on_commit(queue)
    return len(targets)


@job("default")
def target_edges_sync_job() -> str:
    """Push certificates and config to every compose target's edge (coalesced, see deployments.edges)."""
    results = edges.target_edges_sync(actor=Actor.system("edge sync"))
    failed = [r.target for r in results if r.error]
    return f"{len(results)} edge(s) synced" + (f"; failed: {', '.join(failed)}" if failed else "")
