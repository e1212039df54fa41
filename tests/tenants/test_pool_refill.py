"""Refilling the schema pool: one job for a burst of provisions, at the front of its queue,
never two fillers at once, on the real worker."""

import django_rq
import pytest
from django.conf import settings
from django.test.utils import override_settings

from tenants import jobs, services
from tenants.models import SchemaPoolEntry, SchemaTemplate
from tests.conftest import TEST_ACTOR

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.empty_pool]


def queued_functions() -> list[str]:
    return [job.func_name for job in django_rq.get_queue("default").jobs]


def ready() -> int:
    return SchemaPoolEntry.objects.filter(status=SchemaPoolEntry.Status.READY).count()


def test_a_burst_of_provisions_queues_one_refill_which_the_worker_runs(plans, run_worker):
    for i in range(3):
        result = services.tenant_provision(
            subdomain=f"burst-{i}", name=f"Burst {i}", plan="growth", owner_email=f"o@b{i}.test",
            actor=TEST_ACTOR,
        )
        assert result.tenant.status == "active"
    # The first provision built spares on the spot (empty pool) and queued the only refill.
    assert queued_functions().count("tenants.jobs.pool_refill_job") == 1
    run_worker("default")
    assert queued_functions() == []
    assert ready() >= settings.TENANT_SCHEMA_POOL_SIZE  # the worker's setting is the same
    assert SchemaTemplate.objects.filter(refused="").exists()  # built by replay
    assert not django_rq.get_connection("default").exists(jobs.POOL_REFILL_QUEUED)
    # Once it has run, the next provision queues the next refill.
    services.tenant_provision(
        subdomain="after-burst", name="After", plan="growth", owner_email="o@after.test", actor=TEST_ACTOR
    )
    assert queued_functions() == ["tenants.jobs.pool_refill_job"]


def test_the_refill_goes_to_the_front_of_the_queue(plans):
    tenant = services.tenant_request(
        subdomain="queued", name="Queued", plan="growth", owner_email="o@q.test", actor=TEST_ACTOR
    )
    jobs.provision_tenant_job.delay(str(tenant.pk), *TEST_ACTOR.job_args)
    assert jobs.pool_refill_request() is True
    assert jobs.pool_refill_request() is False  # already queued
    assert queued_functions() == ["tenants.jobs.pool_refill_job", "tenants.jobs.provision_tenant_job"]


def test_a_second_refill_never_runs_beside_the_first(monkeypatch):
    redis = django_rq.get_connection("default")
    running = redis.lock(jobs.POOL_FILL_LOCK, timeout=30)
    assert running.acquire(blocking=False)  # another worker is filling
    monkeypatch.setattr(jobs, "POOL_FILL_WAIT_SECONDS", 0.2)
    try:
        assert jobs.pool_refill_job() == 0
        assert ready() == 0
    finally:
        running.release()
    with override_settings(TENANT_SCHEMA_POOL_SIZE=2):
        assert jobs.pool_refill_job() >= 2
        assert jobs.pool_refill_job() == 0  # full: nothing to add
    assert ready() >= 2
