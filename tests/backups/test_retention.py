"""Retention: exactly the right backups are kept; erasure after deprovisioning; the schedule."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from backups.models import Backup
from backups.selectors import tenants_due
from backups.services.retention import backup_prune
from backups.services.runs import backup_tenant_now
from backups.storage import backup_storage
from core.audit import Actor
from core.models import AuditEvent
from tenants.models import Tenant
from tenants.services import tenant_deprovision

ACTOR = Actor.command("pytest")
NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)  # a Monday


def stored_backup(tenant, created_at, status=Backup.Status.VERIFIED, **extra) -> Backup:
    """A backup record with a real stored object, as the retention job sees them."""
    backup = Backup.objects.create(
        kind=Backup.Kind.TENANT if tenant else Backup.Kind.PLATFORM,
        tenant=tenant,
        tenant_label=tenant.subdomain if tenant else "",
        status=status,
        storage="local",
        created_at=created_at,
        **extra,
    )
    backup.location = f"tenants/{backup.tenant_id}/{backup.pk}.dump"
    backup.save()
    backup_storage().put_bytes(backup.location, b"dump")
    return backup


@pytest.mark.django_db(transaction=True)
def test_pruning_keeps_exactly_the_policy_set(make_tenant, settings):
    settings.BACKUP_KEEP_HOURLY, settings.BACKUP_KEEP_WEEKLY, settings.BACKUP_KEEP_MONTHLY = 3, 2, 2
    shop = make_tenant("acme")
    shop.plan.backup_retention_days, shop.plan.backup_frequency = 2, "hourly"
    shop.plan.save()
    other = make_tenant("bolt")
    # Hourly backups over the last 5 hours, then one a day going back 70 days (two on some days).
    made = {}
    for h in range(5):
        made[f"h{h}"] = stored_backup(shop, NOW - timedelta(hours=h))
    for d in range(1, 71):
        made[f"d{d}"] = stored_backup(shop, NOW - timedelta(days=d, hours=3))
        if d in (1, 10):
            made[f"d{d}-early"] = stored_backup(shop, NOW - timedelta(days=d, hours=8))
    failed_old = stored_backup(shop, NOW - timedelta(days=9), status=Backup.Status.FAILED)
    failed_new = stored_backup(shop, NOW - timedelta(days=1), status=Backup.Status.FAILED)
    running = stored_backup(shop, NOW - timedelta(days=40), status=Backup.Status.RUNNING)
    lone = stored_backup(other, NOW - timedelta(days=300))  # the newest of its tenant: always kept

    # hourly 3: h0 h1 h2. daily 2: today (h0), yesterday (d1). weekly 2: this ISO week (h0) and
    # last week's newest (Sunday, d1). monthly 2: June (h0) and May's newest (May 31 = d15).
    expected_keep = {made[k].pk for k in ("h0", "h1", "h2", "d1", "d15")} | {lone.pk}
    plan = backup_prune(dry_run=True, actor=ACTOR, now=NOW)
    assert {b.pk for b in plan.keep} == expected_keep
    deleted = {b.pk for b, _ in plan.delete}
    assert failed_old.pk in deleted and failed_new.pk not in deleted and running.pk not in deleted
    assert Backup.objects.count() == len(made) + 4  # dry run deletes nothing

    backup_prune(dry_run=False, actor=ACTOR, now=NOW)
    remaining = set(Backup.objects.values_list("pk", flat=True))
    assert remaining == expected_keep | {failed_new.pk, running.pk}
    keys = set(backup_storage().list_keys("tenants/"))
    assert keys == {Backup.objects.get(pk=pk).location for pk in remaining}
    assert AuditEvent.objects.filter(action="backup.pruned").count() == len(deleted)


@pytest.mark.django_db(transaction=True)
def test_prune_command_dry_run_lists_and_keeps(make_tenant, capsys):
    shop = make_tenant("acme")
    for d in range(40):
        stored_backup(shop, datetime.now(UTC) - timedelta(days=d, hours=1))
    call_command("prune_backups", "--dry-run")
    out = capsys.readouterr().out
    assert "Would delete" in out and Backup.objects.count() == 40
    call_command("prune_backups")
    assert "Deleted" in capsys.readouterr().out and Backup.objects.count() < 40


@pytest.mark.django_db(transaction=True)
def test_deprovision_takes_a_final_backup_and_erases_it_after_retention(make_tenant, settings):
    settings.BACKUP_FINAL_RETENTION_DAYS = 30
    shop = make_tenant("acme")
    earlier = backup_tenant_now(tenant=shop, actor=ACTOR)
    tenant_deprovision(tenant=shop, drop_schema=True, actor=ACTOR)
    final = Backup.objects.get(purpose=Backup.Purpose.FINAL)
    assert final.status == Backup.Status.VERIFIED and final.manifest["schema"] == "acme"
    assert backup_storage().exists(final.location)
    shop.refresh_from_db()
    assert shop.status == Tenant.Status.DELETED
    # Kept through the retention period (pruning by policy does not touch them) ...
    backup_prune(dry_run=False, actor=ACTOR, now=datetime.now(UTC) + timedelta(days=29))
    assert set(Backup.objects.values_list("pk", flat=True)) == {final.pk, earlier.pk}
    # ... and erased after it: records and objects.
    backup_prune(dry_run=False, actor=ACTOR, now=datetime.now(UTC) + timedelta(days=31))
    assert not Backup.objects.exists()
    assert not backup_storage().exists(final.location) and not backup_storage().exists(earlier.location)
    actions = list(AuditEvent.objects.filter(tenant=shop).values_list("action", flat=True))
    assert "backup.erasure_scheduled" in actions and actions.count("backup.erased") == 2


@pytest.mark.django_db(transaction=True)
def test_deprovision_drops_nothing_when_the_final_backup_fails(make_tenant, settings, tmp_path):
    shop = make_tenant("acme")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    settings.BACKUP_LOCAL_DIR = blocker  # the store cannot be written
    from tenants.errors import TenantStateError

    with pytest.raises(TenantStateError, match="final backup of 'acme' failed, so nothing was deleted"):
        tenant_deprovision(tenant=shop, drop_schema=True, actor=ACTOR)
    shop.refresh_from_db()
    assert shop.status == Tenant.Status.ACTIVE
    from django_tenants.utils import schema_exists

    assert schema_exists("acme") and shop.domains.exists()


@pytest.mark.django_db
def test_schedule_staggers_tenants_over_the_interval(make_tenant):
    tenants = [make_tenant(f"shop{i:02d}") for i in range(12)]
    base = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    # Ticking once a minute for two hours: after its first backup, every (hourly) tenant is due
    # exactly once an hour at its own slot - and the slots are spread over the hour.
    due_at: dict = {t.pk: [] for t in tenants}
    for minute in range(121):
        now = base + timedelta(minutes=minute)
        for tenant in tenants_due(now=now):
            due_at[tenant.pk].append(minute)
            Backup.objects.create(kind="tenant", tenant=tenant, status="verified", created_at=now)
    for minutes in due_at.values():
        assert len(minutes) in (2, 3) and minutes[1] - minutes[0] <= 60, due_at
        assert all(b - a == 60 for a, b in zip(minutes[1:], minutes[2:], strict=False)), due_at
    assert len({m[-1] % 60 for m in due_at.values()}) > 6  # spread out, not all in the same minute
