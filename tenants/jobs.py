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


@job("default")
def pool_refill_job() -> int:
    # One filler at a time; a second one finding the lock taken has nothing to add.
    lock = django_rq.get_connection("default").lock("platform:schema-pool-fill", timeout=900)
    if not lock.acquire(blocking=False):
        return 0
    try:
        return pool_fill(size=settings.TENANT_SCHEMA_POOL_SIZE)
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
