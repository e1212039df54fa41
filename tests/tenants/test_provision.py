import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_exists

from core.models import AuditEvent
from tenants import services
from tenants.errors import TenantStateError, TenantValidationError
from tenants.models import Domain, SchemaPoolEntry, Tenant
from tenants.schema_pool import pool_fill, pool_reap
from tests.conftest import BASE_DIR, TEST_ACTOR, database_url_for_subprocesses, subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.empty_pool]


def user_schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') "
            "AND nspname NOT LIKE 'pg\\_%'"
        )
        return {name for (name,) in cursor.fetchall()}


def test_provision_creates_schema_domain_owner_and_audit(plans):
    result = services.tenant_provision(
        subdomain="Acme-Shoes", name="Acme Shoes", plan="growth", owner_email="Owner@Acme.test",
        actor=TEST_ACTOR,
    )
    tenant = result.tenant
    assert (tenant.subdomain, tenant.schema_name, tenant.status) == ("acme-shoes", "acme_shoes", "active")
    assert schema_exists("acme_shoes")
    domain = Domain.objects.get(tenant=tenant)
    assert (domain.domain, domain.kind, domain.status, domain.is_primary) == (
        "acme-shoes.localhost", "platform", "active", True,
    )
    assert result.owner_link.startswith("http://acme-shoes.localhost")
    assert "/account/set-password/" in result.owner_link
    with connection.cursor() as cursor:
        cursor.execute("SELECT username, has_usable FROM (SELECT username, password NOT LIKE '!%%' "
                       "AS has_usable FROM acme_shoes.auth_user) u")
        assert cursor.fetchall() == [("owner@acme.test", False)]
    actions = list(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert sorted(actions) == ["tenant.provisioned", "tenant.requested"]


def test_provision_takes_a_spare_schema_when_the_pool_has_one(plans):
    assert pool_fill(size=2) == 2
    result = services.tenant_provision(
        subdomain="pooled", name="Pooled", plan="growth", owner_email="o@pooled.test", actor=TEST_ACTOR
    )
    assert result.from_pool
    assert SchemaPoolEntry.objects.count() == 1
    assert "pooled" in user_schemas()


def test_empty_pool_falls_back_to_building_a_schema(plans):
    result = services.tenant_provision(
        subdomain="fresh", name="Fresh", plan="growth", owner_email="o@fresh.test", actor=TEST_ACTOR
    )
    assert not result.from_pool
    assert user_schemas() == {"fresh"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"subdomain": "x"}, "3 to 63 characters"),
        ({"subdomain": "www"}, "reserved"),
        ({"plan": "platinum"}, "Unknown plan 'platinum'. Active plans: starter, growth"),
        ({"plan": "retired"}, "Plan 'retired' is not active"),
        ({"owner_email": "not-an-email"}, "not a valid email"),
        ({"name": "  "}, "needs a name"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_created(plans, fields, message):
    args = dict(subdomain="good-shop", name="Good", plan="growth", owner_email="o@good.test") | fields
    with pytest.raises(TenantValidationError, match=message):
        services.tenant_provision(**args, actor=TEST_ACTOR)
    assert Tenant.objects.count() == 0
    assert user_schemas() == set()


def test_taken_subdomain_is_refused(make_tenant):
    make_tenant("acme")
    with pytest.raises(TenantValidationError, match="'acme' is taken by 'Acme' \\(active\\)"):
        services.tenant_provision(
            subdomain="ACME", name="Other", plan="growth", owner_email="o@x.test", actor=TEST_ACTOR
        )


def test_provisioning_twice_is_harmless(make_tenant):
    tenant = make_tenant("acme")
    again = services.tenant_provision_run(tenant_id=tenant.pk, actor=TEST_ACTOR)
    assert again.owner_link is None and again.tenant.status == "active"
    assert AuditEvent.objects.filter(action="tenant.provisioned").count() == 1


def provision_acme() -> services.ProvisionResult:
    return services.tenant_provision(
        subdomain="acme", name="Acme", plan="growth", owner_email="o@acme.test", actor=TEST_ACTOR
    )


def provision_acme_fails_creating_the_owner(monkeypatch) -> Tenant:
    def explode(tenant):
        raise RuntimeError("disk full while creating the owner")

    with monkeypatch.context() as patched:
        patched.setattr(services, "_owner_create", explode)
        with pytest.raises(RuntimeError):
            provision_acme()
    return Tenant.objects.get(subdomain="acme")


def test_failure_mid_provision_leaves_no_schema_and_can_be_retried(plans, monkeypatch):
    pool_fill(size=1)
    spare = SchemaPoolEntry.objects.get().schema_name

    tenant = provision_acme_fails_creating_the_owner(monkeypatch)
    assert tenant.status == "failed"
    assert "disk full" in tenant.status_reason
    # The rename was rolled back with everything else: the spare is still a spare.
    assert user_schemas() == {spare}
    assert not Domain.objects.exists()
    assert AuditEvent.objects.filter(action="tenant.provision_failed", tenant=tenant).exists()

    retried = provision_acme()
    assert retried.tenant.pk == tenant.pk and retried.tenant.status == "active"
    assert user_schemas() == {"acme"}


def test_retry_takes_over_a_platform_host_row_left_from_before(plans, monkeypatch):
    """Activation upserts the platform host: a row already there is updated in place, not doubled."""
    tenant = provision_acme_fails_creating_the_owner(monkeypatch)
    host = services.platform_host_for("acme")
    left = Domain.objects.create(
        domain=host, tenant=tenant, is_primary=False, kind=Domain.Kind.CUSTOM,
        status=Domain.Status.PENDING_VERIFICATION,
    )

    provision_acme()
    (domain,) = Domain.objects.filter(tenant=tenant)
    assert (domain.pk, domain.domain) == (left.pk, host)
    assert (domain.kind, domain.status, domain.is_primary) == ("platform", "active", True)
    assert domain.updated_at > left.updated_at


def test_killed_provisioning_process_leaves_nothing_half_made(plans):
    """SIGKILL the command while its transaction is open: PostgreSQL discards all of it."""
    pool_fill(size=1)
    spare = SchemaPoolEntry.objects.get().schema_name
    # Hold a lock on the domain table so the provisioner blocks inside its transaction,
    # right after renaming the spare schema.
    blocker = psycopg.connect(database_url_for_subprocesses())
    blocker.execute("LOCK TABLE tenants_domain IN SHARE MODE")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "provision_tenant", "acme", "--name", "Acme", "--plan", "growth",
         "--owner-email", "o@acme.test"],
        cwd=BASE_DIR, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'tenants_domain'::regclass"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the provisioner never reached the domain insert")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        blocker.close()

    # PostgreSQL notices the dead client and rolls its transaction back.
    deadline = time.monotonic() + 10
    while "acme" in user_schemas() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user_schemas() == {spare}
    tenant = Tenant.objects.get(subdomain="acme")
    assert tenant.status == "provisioning"
    assert not Domain.objects.exists()

    call_command("provision_tenant", "acme", name="Acme", plan="growth", owner_email="o@acme.test")
    tenant.refresh_from_db()
    assert tenant.status == "active"
    assert user_schemas() == {"acme"}


def test_interrupted_spare_builds_and_orphans_are_reaped(plans):
    pool_fill(size=1)
    SchemaPoolEntry.objects.update(created_at="2000-01-01T00:00Z", status="building")
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "_pool_orphan"')
    assert pool_reap() == 2
    assert user_schemas() == set() and not SchemaPoolEntry.objects.exists()


def test_async_provisioning_runs_on_the_real_worker(plans, run_worker, capsys):
    call_command("provision_tenant", "queued-shop", name="Queued", plan="growth",
                 owner_email="o@queued.test", run_async=True)
    assert "Queued provisioning of queued-shop as job" in capsys.readouterr().out
    tenant = Tenant.objects.get(subdomain="queued-shop")
    assert tenant.status == "provisioning"
    run_worker("default")
    tenant.refresh_from_db()
    assert tenant.status == "active"
    event = AuditEvent.objects.get(tenant=tenant, action="tenant.provisioned")
    assert event.actor_type == "job" and "provision_tenant" in event.actor


def test_command_exit_codes_and_messages(plans):
    with pytest.raises(CommandError, match="Unknown plan 'gold'"):
        call_command("provision_tenant", "shop", name="S", plan="gold", owner_email="o@s.test")
    result = subprocess.run(
        [sys.executable, "manage.py", "provision_tenant", "www", "--name", "W", "--plan", "growth",
         "--owner-email", "o@w.test"],
        cwd=BASE_DIR, env=subprocess_env(), capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "reserved by the platform" in result.stderr


def test_suspend_resume_and_state_errors(make_tenant):
    tenant = make_tenant("acme")
    with pytest.raises(TenantValidationError, match="Give a reason"):
        services.tenant_suspend(tenant=tenant, reason="", actor=TEST_ACTOR)
    services.tenant_suspend(tenant=tenant, reason="unpaid invoice", actor=TEST_ACTOR)
    with pytest.raises(TenantStateError, match="Cannot suspend 'acme': it is suspended"):
        services.tenant_suspend(tenant=tenant, reason="again", actor=TEST_ACTOR)
    services.tenant_resume(tenant=tenant, actor=TEST_ACTOR)
    tenant.refresh_from_db()
    assert tenant.status == "active"
    actions = set(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert {"tenant.suspended", "tenant.resumed"} <= actions


def test_deprovision_asks_and_drops_only_when_confirmed(make_tenant, monkeypatch, capsys):
    make_tenant("acme")
    monkeypatch.setattr("builtins.input", lambda prompt: "acm")
    with pytest.raises(CommandError, match="Confirmation did not match; nothing was changed"):
        call_command("deprovision_tenant", "acme")
    assert "DROPS schema 'acme'" in capsys.readouterr().out
    assert schema_exists("acme")

    call_command("deprovision_tenant", "acme", yes=True)
    tenant = Tenant.objects.get(subdomain="acme")
    assert tenant.status == "deleted" and not schema_exists("acme")
    assert not Domain.objects.filter(tenant=tenant).exists()
    event = AuditEvent.objects.get(action="tenant.deprovisioned")
    assert event.details["schema_dropped"] is True


def test_deprovision_keep_schema(make_tenant):
    make_tenant("acme")
    call_command("deprovision_tenant", "acme", yes=True, keep_schema=True)
    assert schema_exists("acme")
    assert Tenant.objects.get(subdomain="acme").status_reason == "schema kept"


def test_concurrent_provisioning_of_one_tenant_fails_fast_without_marking_it_failed(plans):
    tenant = services.tenant_request(
        subdomain="acme", name="Acme", plan="growth", owner_email="o@acme.test", actor=TEST_ACTOR
    )
    other = psycopg.connect(database_url_for_subprocesses())
    other.execute("BEGIN")
    other.execute("SELECT 1 FROM tenants_tenant WHERE id = %s FOR UPDATE", [tenant.pk])
    try:
        with pytest.raises(TenantStateError, match="'acme' is being provisioned by another process"):
            services.tenant_provision_run(tenant_id=tenant.pk, actor=TEST_ACTOR)
    finally:
        other.rollback()
        other.close()
    tenant.refresh_from_db()
    assert tenant.status == "provisioning"
    assert services.tenant_provision_run(tenant_id=tenant.pk, actor=TEST_ACTOR).tenant.status == "active"


def test_interrupted_deprovisioning_can_be_finished(make_tenant):
    tenant = make_tenant("acme")
    Tenant.objects.filter(pk=tenant.pk).update(status="deprovisioning")  # as left by a dead worker
    services.tenant_deprovision(tenant=tenant, drop_schema=True, actor=TEST_ACTOR)
    tenant.refresh_from_db()
    assert tenant.status == "deleted" and not schema_exists("acme")
