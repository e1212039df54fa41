"""RQ jobs: thin, idempotent wrappers that load by id and call one service.

Each job is bound to its queue here (``@job``); callers use ``job.delay(...)``. Jobs that act for
someone take the actor as two strings (``*actor.job_args``) and rebuild it with ``Actor.for_job``.
"""

import django_rq
from django.conf import settings

from core.audit import Actor
from core.db import connection
from core.jobs import job
from tenants import services
from tenants.models import Tenant
from tenants.schema_pool import pool_fill
from tenants.usage import usage_refresh


def _tenant(tenant_id: str) -> Tenant:
    connection.set_schema_to_public()
    return Tenant.objects.get(pk=tenant_id)


@job("default")
def provision_tenant_job(tenant_id: str, actor_type: str, actor_name: str) -> str:
    result = services.tenant_provision_run(tenant_id=tenant_id, actor=Actor.for_job(actor_type, actor_name))
    return result.tenant.status


@job("default")
def suspend_tenant_job(tenant_id: str, reason: str, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.SUSPENDED:
        return tenant.status
    return services.tenant_suspend(
        tenant=tenant, reason=reason, actor=Actor.for_job(actor_type, actor_name)
    ).status


@job("default")
def resume_tenant_job(tenant_id: str, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.ACTIVE:
        return tenant.status
    return services.tenant_resume(tenant=tenant, actor=Actor.for_job(actor_type, actor_name)).status


@job("default")
def change_plan_job(tenant_id: str, plan_slug: str, actor_type: str, actor_name: str) -> str:
    tenant = services.tenant_change_plan(
        tenant=_tenant(tenant_id), plan=plan_slug, actor=Actor.for_job(actor_type, actor_name)
    )
    return tenant.plan.slug


# Set while a refill job is queued and has not started: provisioning queues one only if unset.
POOL_REFILL_QUEUED = "platform:schema-pool-refill-queued"
POOL_FILL_LOCK = "platform:schema-pool-fill"
# Top-ups one refill job does, counting again after each (claims during a burst): its bound.
POOL_REFILL_ROUNDS = 20
# How long a second refill waits for the running one before leaving the work to it.
POOL_FILL_WAIT_SECONDS = 60


def pool_refill_request() -> bool:
    """Queue a pool refill unless one is queued already; True when this call queued it.

    A burst of provisions queues one refill, not one each. The flag expires, so a job lost
    before it ran (its enqueue rolled back with a transaction) blocks refills for two minutes
    at most, and the cron schedule queues one every five minutes anyway.
    """
    redis = django_rq.get_connection("default")
    if not redis.set(POOL_REFILL_QUEUED, "1", nx=True, ex=120):
        return False
    pool_refill_job.delay()
    return True


# At the front of its queue: during a burst of queued provisions the spares must come first.
@job("default", at_front=True)
def pool_refill_job() -> int:
    # One filler at a time: a second waits for the first (which may leave nothing to do).
    redis = django_rq.get_connection("default")
    lock = redis.lock(POOL_FILL_LOCK, timeout=900)
    if not lock.acquire(blocking=True, blocking_timeout=POOL_FILL_WAIT_SECONDS):
        return 0
    try:
        # From here on a claim queues a new job, which this one's next count may already cover.
        redis.delete(POOL_REFILL_QUEUED)
        return pool_fill(size=settings.TENANT_SCHEMA_POOL_SIZE, max_rounds=POOL_REFILL_ROUNDS)
    finally:
        lock.release()


@job("long")
def usage_refresh_job() -> int:
    return usage_refresh()


@job("long")
def deprovision_tenant_job(tenant_id: str, drop_schema: bool, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.DELETED:
        return tenant.status
    return services.tenant_deprovision(
        tenant=tenant, drop_schema=drop_schema, actor=Actor.for_job(actor_type, actor_name)
    ).status
