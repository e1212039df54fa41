"""Restores, exports, restore drills, whole-database restores and disaster-recovery drills as
webhook events: their payloads, who hears them, and two of them through the real workers."""

from pathlib import Path

import pytest
from standardwebhooks import Webhook

from backups import jobs as backup_jobs
from backups.models import Backup, DisasterRecoveryDrill, Export, Restore, RestoreDrill
from backups.services._common import mark_failed
from backups.services.exports import export_create
from backups.services.runs import backup_create
from core.audit import Action, Actor, audit_record
from tests.backups.conftest import backup_dir, run_backup_worker  # noqa: F401 - fixtures used here
from tests.webhooks.receiver import spec_verify
from webhooks import services
from webhooks.events import EVENT_TYPES, SHOP_REASON, event_type_for
from webhooks.models import Message

ACTOR = Actor.command("pytest")
NEW_TYPES = ["backup.restored", "backup.restore_failed", "export.ready", "export.failed", "drill.passed",
             "drill.failed", "database.restored", "database.restore_failed", "dr_drill.passed",
             "dr_drill.failed"]


def data(event_type: str) -> dict:
    """What the platform's endpoints received (a shop's own endpoints get the reasons replaced)."""
    return Message.objects.get(type=event_type, deliveries__endpoint__tenant__isnull=True).payload["data"]


@pytest.mark.slow  # the backups worker, the long-jobs worker and the webhook worker
@pytest.mark.django_db(transaction=True)
def test_an_export_and_a_restore_reach_their_shop_signed_through_the_real_workers(
    make_tenant, receiver, webhook_worker, run_backup_worker, run_worker  # noqa: F811
):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    wanted = ["export.ready", "backup.restored", "backup.restore_failed"]
    ours = services.endpoint_create(url=receiver.url("/acme"), tenant=acme, actor=ACTOR, events=wanted)
    services.endpoint_create(url=receiver.url("/globex"), tenant=globex, actor=ACTOR, events=wanted)
    platform = services.endpoint_create(url=receiver.url("/platform"), actor=ACTOR, events=["export.ready"])

    export = export_create(tenant=acme, actor=ACTOR)
    run_backup_worker()
    webhook_worker()
    (got,) = receiver.at("/acme")
    body = Webhook(ours.secret).verify(got.body, got.headers)
    assert body["type"] == "export.ready" and body["data"]["tenant"]["subdomain"] == "acme"
    sent = body["data"]["export"]
    export.refresh_from_db()
    assert (sent["id"], sent["status"], sent["sha256"]) == (str(export.pk), "ready", export.sha256)
    assert sent["size_bytes"] > 0 and sent["status_url"] == f"/api/v1/exports/{export.pk}"
    assert "token=" not in got.body.decode()  # no download link in a body: ask the status URL
    (to_platform,) = receiver.at("/platform")
    assert spec_verify(platform.secret, to_platform) and to_platform.json["type"] == "export.ready"

    backup = backup_create(kind=Backup.Kind.TENANT, tenant=acme, actor=ACTOR)
    run_backup_worker()
    backup_jobs.restore_in_place_job.delay(str(acme.pk), str(backup.pk), "acme", *ACTOR.job_args)
    run_worker("long")
    run_backup_worker()
    webhook_worker()
    restore = Restore.objects.get()
    assert restore.status == Restore.Status.SUCCEEDED, restore.status_reason
    first, second = receiver.at("/acme")
    assert spec_verify(ours.secret, second)
    restored = Webhook(ours.secret).verify(second.body, second.headers)
    assert restored["type"] == "backup.restored"
    sent = restored["data"]["restore"]
    assert (sent["id"], sent["mode"], sent["status"], sent["backup_id"]) == (
        str(restore.pk), "in_place", "succeeded", str(backup.pk))
    assert sent["new_tenant"] is None and sent["duration_seconds"] > 0
    assert receiver.at("/globex") == []  # another shop never hears about acme
    assert len(receiver.at("/platform")) == 1  # it asked for export.ready only


@pytest.fixture
def everything(db):
    """A platform endpoint that hears every event (no worker runs: messages are only recorded)."""
    return services.endpoint_create(url="https://hooks.example.com/all", actor=ACTOR).endpoint


def test_failures_drills_and_database_restores_become_events(everything, make_tenant,
                                                            django_capture_on_commit_callbacks):
    shop = make_tenant("omega")
    shop_endpoint = services.endpoint_create(url="https://hooks.example.com/omega", tenant=shop,
                                             actor=ACTOR).endpoint
    export = Export.objects.create(tenant=shop, tenant_label="omega")
    backup = Backup.objects.create(kind=Backup.Kind.TENANT, tenant=shop, tenant_label="omega",
                                   schema_name=shop.schema_name)
    drill = RestoreDrill.objects.create(backup=backup, backup_label=str(backup.pk),
                                        reason="row counts differ",
                                        checks=[{"check": "rows", "ok": False, "detail": "orders 3 != 4"}])
    dr = DisasterRecoveryDrill.objects.create(trigger="scheduled", passed=True, tenant_label="omega",
                                              store="s3://offsite", rto_seconds=12.5)
    with django_capture_on_commit_callbacks(execute=True):
        mark_failed(export, "disk full", ACTOR)
        audit_record(actor=ACTOR, action=Action.DRILL_FAILED, tenant=shop, target=str(backup.pk),
                     details={"drill": drill.pk, "rto_seconds": None, "reason": "row counts differ"})
        # A scratch cluster that failed to start made no Restore row: the event says what it can.
        audit_record(actor=ACTOR, action=Action.BACKUP_RESTORE_FAILED, tenant=shop,
                     target="to 2026-12-01T10:00:00+00:00", details={"mode": "as_new", "reason": "no WAL"})
        audit_record(actor=ACTOR, action=Action.DATABASE_PITR_RESTORED, target="2026-12-01T10:00:00+00:00",
                     details={"to": "2026-12-01T10:00:00+00:00", "target": "restored", "schemas": 4,
                              "tables": 40, "rows": 1000, "seconds": 3.2})
        audit_record(actor=ACTOR, action=Action.DATABASE_RESTORE_FAILED, target=str(backup.pk),
                     details={"target": "copy", "reason": "sha256 mismatch"})
        audit_record(actor=ACTOR, action=Action.DR_DRILL_PASSED, target=str(dr.pk),
                     details={"store": "s3://offsite", "shop": "omega", "rto_seconds": 12.5, "reason": ""})
        # export_tenant --output wrote a file on the operator's machine: nothing to download.
        local = audit_record(actor=ACTOR, action=Action.TENANT_EXPORTED, tenant=shop, target="omega",
                             details={"tables": 3})
    assert event_type_for(local) is None and not Message.objects.filter(type="export.ready").exists()
    failed = data("export.failed")
    assert (failed["export"]["id"], failed["export"]["status"], failed["export"]["reason"]) == (
        str(export.pk), "failed", "disk full")
    assert data("drill.failed")["drill"] == {
        "id": drill.pk, "backup_id": str(backup.pk), "passed": False, "rto_seconds": None,
        "reason": "row counts differ", "checks": drill.checks}
    assert data("backup.restore_failed")["restore"] == {
        "id": None, "mode": "as_new", "status": "failed", "source": "to 2026-12-01T10:00:00+00:00",
        "reason": "no WAL"}
    database = data("database.restored")["database"]
    assert (database["kind"], database["target"], database["rows"]) == ("pitr", "restored", 1000)
    assert data("database.restore_failed")["database"]["kind"] == "dump"
    passed = data("dr_drill.passed")["drill"]
    assert (passed["id"], passed["passed"], passed["shop"], passed["rto_seconds"]) == (
        dr.pk, True, "omega", 12.5)
    assert "s3://offsite" not in str(Message.objects.get(type="dr_drill.passed").payload)
    # Scoped to the shop where there is one: the shop's endpoint gets its own shop's events only.
    told_shop = str(list(Message.objects.filter(deliveries__endpoint=shop_endpoint).values_list("payload")))
    assert "row counts differ" not in told_shop and "no WAL" not in told_shop and SHOP_REASON in told_shop
    heard = set(Message.objects.filter(deliveries__endpoint=shop_endpoint).values_list("type", flat=True))
    assert heard == {"export.failed", "drill.failed", "backup.restore_failed"}
    assert Message.objects.filter(deliveries__endpoint=everything).count() == 6


def test_the_new_event_types_are_declared_and_listed_in_the_api_guide():
    assert set(NEW_TYPES) <= set(EVENT_TYPES)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    missing = [name for name in EVENT_TYPES if f"`{name}`" not in guide]
    assert not missing, f"list these in docs/api.md's event types: {missing}"
