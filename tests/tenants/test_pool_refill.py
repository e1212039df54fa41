"""Refilling the schema pool: one job for a burst of provisions, at the front of its queue,
never two fillers at once, on the real worker."""

import django_rq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import override_settings

from tenants import jobs, services
from tenants.migration_state import schema_is_current
from tenants.models import SchemaPoolEntry, SchemaTemplate, Tenant
from tenants.schema_pool import pool_spares_build
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


def test_fill_schema_pool_command(capsys):
    with pytest.raises(CommandError, match="--size must be 0 or more"):
        call_command("fill_schema_pool", size=-1)
    with pytest.raises(CommandError, match="--batch must be at least 1"):
        call_command("fill_schema_pool", size=2, batch=0)
    assert ready() == 0
    call_command("fill_schema_pool", size=3, batch=2)
    assert "pool target is 3" in capsys.readouterr().out
    assert ready() >= 3


def test_an_empty_pool_means_a_spare_replayed_inside_the_provisioning_transaction(plans):
    pool_spares_build(count=1)  # the capture
    with connection.cursor() as cursor:
        for name in SchemaPoolEntry.objects.values_list("schema_name", flat=True):
            cursor.execute(f'DROP SCHEMA "{name}" CASCADE')
    SchemaPoolEntry.objects.all().delete()

    result = services.tenant_provision(
        subdomain="inside", name="Inside", plan="growth", owner_email="o@inside.test", actor=TEST_ACTOR
    )
    assert not result.from_pool and result.tenant.status == "active"
    assert schema_is_current("inside")
    assert not SchemaPoolEntry.objects.exists()  # never a spare anyone else could claim

    # A fault after the spare is built (the domain insert fails): nothing is left behind.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_domain() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; "
            "CREATE TRIGGER refuse_domain BEFORE INSERT ON tenants_domain FOR EACH ROW "
            "WHEN (NEW.domain LIKE 'broken.%%') EXECUTE FUNCTION refuse_domain()"
        )
    try:
        with pytest.raises(Exception, match="injected fault"):
            services.tenant_provision(
                subdomain="broken", name="Broken", plan="growth", owner_email="o@b.test", actor=TEST_ACTOR
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_domain ON tenants_domain; DROP FUNCTION refuse_domain()")
    assert Tenant.objects.get(subdomain="broken").status == "failed"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = 'broken' OR nspname LIKE '\\_pool\\_%'"
        )
        assert cursor.fetchall() == []
