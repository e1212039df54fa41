"""RQ jobs: thin, idempotent wrappers that load by id and call one service."""

import django_rq
from django.conf import settings
from django.db import connection
from rq import get_current_job

from tenants import services
from tenants.audit import Actor
from tenants.models import Tenant
from tenants.schema_pool import pool_fill
from tenants.usage import usage_refresh


def _job_actor(actor_type: str, actor_name: str) -> Actor:
    job = get_current_job()
    return Actor(actor_type, actor_name).via_job(job.id if job else "inline")


def _tenant(tenant_id: str) -> Tenant:
    connection.set_schema_to_public()
    return Tenant.objects.get(pk=tenant_id)


def provision_tenant_job(tenant_id: str, actor_type: str, actor_name: str) -> str:
    result = services.tenant_provision_run(tenant_id=tenant_id, actor=_job_actor(actor_type, actor_name))
    return result.tenant.status


def suspend_tenant_job(tenant_id: str, reason: str, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.SUSPENDED:
        return tenant.status
    return services.tenant_suspend(
        tenant=tenant, reason=reason, actor=_job_actor(actor_type, actor_name)
    ).status


def resume_tenant_job(tenant_id: str, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.ACTIVE:
        return tenant.status
    return services.tenant_resume(tenant=tenant, actor=_job_actor(actor_type, actor_name)).status


def change_plan_job(tenant_id: str, plan_slug: str, actor_type: str, actor_name: str) -> str:
    tenant = services.tenant_change_plan(
        tenant=_tenant(tenant_id), plan=plan_slug, actor=_job_actor(actor_type, actor_name)
    )
    return tenant.plan.slug


def pool_refill_job() -> int:
    # One filler at a time; a second one finding the lock taken has nothing to add.
    lock = django_rq.get_connection("default").lock("platform:schema-pool-fill", timeout=900)
    if not lock.acquire(blocking=False):
        return 0
    try:
        return pool_fill(size=settings.TENANT_SCHEMA_POOL_SIZE)
    finally:
        lock.release()


def usage_refresh_job() -> int:
    return usage_refresh()


def deprovision_tenant_job(tenant_id: str, drop_schema: bool, actor_type: str, actor_name: str) -> str:
    tenant = _tenant(tenant_id)
    if tenant.status == Tenant.Status.DELETED:
        return tenant.status
    return services.tenant_deprovision(
        tenant=tenant, drop_schema=drop_schema, actor=_job_actor(actor_type, actor_name)
    ).status
