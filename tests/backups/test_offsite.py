"""Off-site copies in a second bucket in another region (moto's S3 server), and the DR drill that
restores the platform and a shop from that second store with the primary store gone."""

import hashlib
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from backups.errors import StorageError
from backups.models import Backup, DisasterRecoveryDrill, OffsiteCopy
from backups.services import offsite as svc
from backups.services.runs import backup_create, backup_run, backup_tenant_now
from backups.storage import backup_storage
from core.audit import Actor
from core.models import AuditEvent
from platform_site.devservices import free_port
from tests.backups.conftest import OFFSITE_REGION, PART_SIZE, add_products, scratch_databases

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def far_object(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=f"far/{key}")["Body"].read()


def copy_all_here() -> list[OffsiteCopy]:
    """Run every queued copy in this process (what the backups worker does with the queued jobs)."""
    return [
        svc.offsite_copy_run(copy_id=str(c.pk), actor=ACTOR)
        for c in OffsiteCopy.objects.filter(status=OffsiteCopy.Status.QUEUED)
    ]


@pytest.mark.slow
def test_every_dump_is_copied_by_the_backup_worker_and_verified_in_the_other_region(
    make_tenant, s3, offsite, run_backup_worker
):
    primary, primary_bucket = s3
    far, far_bucket = offsite
    shop = make_tenant("acme")
    add_products(shop.schema_name, 4000, "p-")  # a dump above the 64 KiB part size: a multipart copy
    backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR)
    backup_create(kind=Backup.Kind.PLATFORM, actor=ACTOR)
    run_backup_worker()  # the dumps, then the copies they queued: all on the backups queue
    backups = list(Backup.objects.all())
    assert {b.status for b in backups} == {Backup.Status.VERIFIED}
    copies = {c.backup_id: c for c in OffsiteCopy.objects.all()}
    assert set(copies) == {b.pk for b in backups}
    for backup in backups:
        copy = copies[backup.pk]
        assert copy.status == OffsiteCopy.Status.VERIFIED, copy.status_reason
        assert copy.verified_at and copy.store.startswith(f"s3://{far_bucket}/far")
        data = far_object(far, far_bucket, backup.location)
        assert hashlib.sha256(data).hexdigest() == backup.sha256 == copy.sha256
        assert len(data) == backup.size_bytes
        manifest = far_object(far, far_bucket, backup.location + ".manifest.json")
        assert backup.sha256.encode() in manifest
    big = next(b for b in backups if b.kind == "tenant")
    assert big.size_bytes > PART_SIZE
    assert "-" in far.head_object(Bucket=far_bucket, Key=f"far/{big.location}")["ETag"]  # multipart
    # A copy goes to the front of the queue: the shop's copy was made before the next dump began.
    tenant_backup, platform_backup = (next(b for b in backups if b.kind == k) for k in ("tenant", "platform"))
    assert copies[tenant_backup.pk].copied_at <= platform_backup.started_at
    assert far.get_bucket_location(Bucket=far_bucket)["LocationConstraint"] == OFFSITE_REGION
    assert primary.get_bucket_location(Bucket=primary_bucket)["LocationConstraint"] in (None, "us-east-1")
    assert svc.offsite_lag() == (0.0, 0)
    assert AuditEvent.objects.filter(action="offsite.copied").count() == 2


def test_a_corrupted_far_copy_is_detected_and_copied_again(make_tenant, offsite):
    far, far_bucket = offsite
    shop = make_tenant("acme")
    add_products(shop.schema_name, 50, "p-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)  # primary: the local folder
    (copy,) = copy_all_here()
    assert copy.status == OffsiteCopy.Status.VERIFIED
    good = far_object(far, far_bucket, backup.location)
    far.put_object(Bucket=far_bucket, Key=f"far/{backup.location}", Body=good[:-64] + b"\0" * 64)  # fault
    checked = svc.offsite_copy_verify(copy=copy, actor=ACTOR)
    assert checked.status == OffsiteCopy.Status.CORRUPT
    assert "Checksum mismatch" in checked.status_reason and "made again" in checked.status_reason
    assert svc.offsite_lag()[1] == 1  # the backup is no longer safely off-site
    assert AuditEvent.objects.filter(action="offsite.corrupt", target=str(copy.pk)).exists()
    result = svc.offsite_sweep(actor=ACTOR)
    assert result.retried == 1
    (again,) = copy_all_here()
    assert again.pk == copy.pk and again.status == OffsiteCopy.Status.VERIFIED
    assert far_object(far, far_bucket, backup.location) == good
    assert svc.offsite_lag() == (0.0, 0)
    # A copy deleted from the far bucket is found the same way.
    far.delete_object(Bucket=far_bucket, Key=f"far/{backup.location}")
    gone = svc.offsite_copy_verify(copy=again, actor=ACTOR)
    assert gone.status == OffsiteCopy.Status.CORRUPT and "missing" in gone.status_reason


def test_a_failed_copy_is_recorded_retried_with_a_backoff_and_then_succeeds(make_tenant, offsite, settings):
    far, far_bucket = offsite
    shop = make_tenant("acme")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    working = settings.BACKUP_OFFSITE_S3_ENDPOINT_URL
    settings.BACKUP_OFFSITE_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # the far region is down
    settings.BACKUP_S3_MAX_ATTEMPTS = 1
    (failed,) = copy_all_here()
    assert failed.status == OffsiteCopy.Status.FAILED and failed.attempts == 1
    assert "unreachable" in failed.status_reason and "Off-site store" in failed.status_reason
    assert failed.next_attempt_at > timezone.now()
    assert backup_storage().exists(backup.location)  # the primary copy is untouched
    lag, waiting = svc.offsite_lag(now=timezone.now() + timedelta(minutes=5))
    assert waiting == 1 and lag >= 300
    assert svc.offsite_sweep(actor=ACTOR).retried == 0  # its backoff has not passed
    settings.BACKUP_OFFSITE_S3_ENDPOINT_URL = working
    assert svc.offsite_sweep(actor=ACTOR, now=failed.next_attempt_at).retried == 1
    (copied,) = copy_all_here()
    assert copied.status == OffsiteCopy.Status.VERIFIED and copied.attempts == 0
    assert hashlib.sha256(far_object(far, far_bucket, backup.location)).hexdigest() == backup.sha256


@pytest.mark.slow
def test_the_dr_drill_restores_the_platform_and_a_shop_with_the_primary_store_stopped(
    make_tenant, s3, offsite, settings, capsys
):
    shops = [make_tenant("acme"), make_tenant("bolt")]
    for n, shop in enumerate(shops):
        add_products(shop.schema_name, 100 + n, f"{shop.subdomain}-")
        backup_tenant_now(tenant=shop, actor=ACTOR)
    platform = backup_create(kind=Backup.Kind.PLATFORM, actor=ACTOR, enqueue=False)
    platform = backup_run(backup_id=platform.pk, actor=ACTOR)
    assert {c.status for c in copy_all_here()} == {OffsiteCopy.Status.VERIFIED}
    # The first region is lost: its store no longer answers.
    settings.BACKUP_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.BACKUP_S3_MAX_ATTEMPTS = 1
    with pytest.raises(StorageError, match="unreachable"):
        backup_storage().exists(platform.location)
    call_command("dr_drill", "--shop", "bolt")
    out = capsys.readouterr().out
    assert "passed" in out and "shop bolt" in out and "RTO" in out
    drill = DisasterRecoveryDrill.objects.get()
    assert drill.passed and drill.rto_seconds > 0 and drill.tenant_label == "bolt"
    assert drill.platform_key == platform.location and drill.store.startswith(f"s3://{offsite[1]}")
    names = [c["check"] for c in drill.checks]
    assert names == [
        "platform sha256",
        "platform restore",
        "platform row counts",
        "platform migration state",
        "shop routes",
        "shop sha256",
        "shop restore",
        "shop row counts",
        "shop migration state",
    ]
    rows = next(c for c in drill.checks if c["check"] == "shop row counts")["detail"]
    assert "match" in rows
    assert not scratch_databases()
    assert AuditEvent.objects.filter(action="dr_drill.passed", target=str(drill.pk)).exists()
    # An unknown shop: the drill fails and says why.
    with pytest.raises(CommandError, match="'nope' is not an active tenant in the restored platform"):
        call_command("dr_drill", "--shop", "nope")
    assert not DisasterRecoveryDrill.objects.latest("started_at").passed


def test_without_a_second_store_copies_are_off_and_the_commands_say_what_to_set(make_tenant, settings):
    assert settings.BACKUP_OFFSITE_S3_BUCKET == ""
    shop = make_tenant("acme")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    assert backup.status == Backup.Status.VERIFIED and not OffsiteCopy.objects.exists()
    assert svc.offsite_sweep(actor=ACTOR) == svc.SweepResult(0, 0, 0)
    assert svc.offsite_lag() == (0.0, 0)
    for command in ("dr_drill", "offsite_copies"):
        with pytest.raises(CommandError, match="No off-site store is configured: set BACKUP_OFFSITE_S3_"):
            call_command(command)
    from backups.jobs import dr_drill_job

    assert dr_drill_job() is None  # the monthly schedule does nothing
    assert not DisasterRecoveryDrill.objects.exists()


def test_the_dr_drill_fails_clearly_when_the_second_store_holds_no_platform_dump(make_tenant, offsite):
    shop = make_tenant("acme")
    backup_tenant_now(tenant=shop, actor=ACTOR)
    copy_all_here()
    with pytest.raises(CommandError, match="no platform dump in the off-site store: run backup_platform"):
        call_command("dr_drill")
    drill = DisasterRecoveryDrill.objects.get()
    assert not drill.passed and drill.rto_seconds is None
    assert AuditEvent.objects.filter(action="dr_drill.failed").exists()
    with pytest.raises(CommandError, match="must be|number of copies"):
        call_command("offsite_copies", "--verify", "-1")


def test_the_console_shows_copies_on_the_backup_page_the_dashboard_and_the_dr_drill_reports(
    make_tenant, offsite, staff, settings
):
    shop = make_tenant("acme")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    page = staff.get("/admin/backups/backup/").content.decode()
    assert "Off-site copies:</b> s3://" in page and "1 object(s) not yet off-site" in page
    (copy,) = copy_all_here()
    detail = staff.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert "verified" in detail and f"s3://{offsite[1]}/far" in detail and "Copy lag" in detail
    page = staff.get("/admin/backups/backup/").content.decode()
    assert "1 verified" in page and "everything is off-site" in page
    status = staff.get("/admin/monitoring/statusdashboard/").content.decode()
    card = status.split('id="mon-offsite"')[1].split("</table>")[0]
    assert "0 s" in card and "copy lag, 0 waiting" in card and "none yet" in card
    listed = staff.get("/admin/backups/offsitecopy/").content.decode()
    assert backup.location[:30] in listed or "acme" in listed
    response = staff.post(
        "/admin/backups/offsitecopy/",
        {"action": "verify_offsite", "_selected_action": [str(copy.pk)]},
        follow=True,
    )
    assert "1 off-site copy(ies) queued for verification" in response.content.decode()
    # A drill report: what, from where, how long, what was checked.
    with pytest.raises(CommandError):
        call_command("dr_drill")  # no platform dump off-site yet: a failed drill with its reason
    drill = DisasterRecoveryDrill.objects.get()
    report = staff.get(f"/admin/backups/disasterrecoverydrill/{drill.pk}/change/").content.decode()
    assert "no platform dump in the off-site store" in report and offsite[1] in report
    runs = staff.get("/admin/backups/disasterrecoverydrill/").content.decode()
    assert "Run a DR drill now" in runs
    queued = staff.post("/admin/backups/disasterrecoverydrill/run/", {"shop": "acme"}, follow=True)
    assert "DR drill queued" in queued.content.decode()
    settings.BACKUP_OFFSITE_S3_BUCKET = ""
    refused = staff.post("/admin/backups/disasterrecoverydrill/run/", {"shop": "acme"}).content.decode()
    assert "No off-site store is configured" in refused
    page = staff.get("/admin/backups/backup/").content.decode()
    assert "every dump lives in one region only" in page


def test_copy_lag_copy_failures_and_dr_drills_raise_alerts_and_show_in_metrics(
    make_tenant, offsite, settings, client
):
    from monitoring.models import AlertRule, Incident
    from monitoring.services.alerts import rules_evaluate

    settings.METRICS_CACHE_SECONDS = 0
    shop = make_tenant("acme")
    backup_tenant_now(tenant=shop, actor=ACTOR)
    settings.BACKUP_OFFSITE_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # the far region is down
    settings.BACKUP_S3_MAX_ATTEMPTS = 1
    (copy,) = copy_all_here()
    for _ in range(2):
        copy = svc.offsite_copy_run(copy_id=str(copy.pk), actor=ACTOR)
    assert copy.status == OffsiteCopy.Status.FAILED and copy.attempts == 3
    rules_evaluate()
    AlertRule.objects.filter(kind=AlertRule.Kind.OFFSITE_COPY_LAG).update(threshold=0)
    summary = rules_evaluate()
    assert summary.unavailable == []
    open_by_kind = {i.rule.kind: i for i in Incident.objects.filter(status="open").select_related("rule")}
    assert "1 off-site copy(ies) failing" in open_by_kind["offsite_copy_failed"].title
    assert "unreachable" in open_by_kind["offsite_copy_failed"].title
    assert "1 object(s) not yet off-site" in open_by_kind["offsite_copy_lag"].title
    assert "No disaster-recovery drill passed" in open_by_kind["dr_drill_failed"].title
    text = client.get("/metrics", HTTP_HOST="localhost").content.decode()
    assert "platform_offsite_objects_waiting 1.0" in text
    assert 'platform_offsite_copies{status="failed"} 1.0' in text
    lag = float(
        next(
            line for line in text.splitlines() if line.startswith("platform_offsite_copy_lag_seconds ")
        ).split()[1]
    )
    assert lag > 0
    # A failed DR drill (the second store is unreachable too) is its own alert, and a gauge.
    with pytest.raises(CommandError):
        call_command("dr_drill")
    rules_evaluate()
    drill = Incident.objects.get(rule__kind="dr_drill_failed", status="open")  # the overdue one resolved
    assert (
        "Disaster-recovery drill failed: Off-site store unreachable: could not list platform/" in drill.title
    )
    assert "platform_dr_drill_ok 0.0" in client.get("/metrics", HTTP_HOST="localhost").content.decode()


def test_the_second_store_keeps_its_own_longer_retention_and_erases_with_the_shop(
    make_tenant, offsite, settings
):
    from backups.services.exports import export_create, export_run
    from backups.services.retention import backup_delete
    from tenants.models import Tenant

    far, far_bucket = offsite
    settings.BACKUP_OFFSITE_KEEP_DAILY, settings.BACKUP_OFFSITE_KEEP_WEEKLY = 1, 0
    settings.BACKUP_OFFSITE_KEEP_MONTHLY = 12
    shop = make_tenant("acme")
    backups = [backup_tenant_now(tenant=shop, actor=ACTOR) for _ in range(3)]
    export = export_run(export_id=export_create(tenant=shop, actor=ACTOR, enqueue=False).pk, actor=ACTOR)
    copies = {c.backup_id or c.export_id: c for c in copy_all_here()}
    assert {c.status for c in copies.values()} == {OffsiteCopy.Status.VERIFIED} and len(copies) == 4
    assert copies[export.pk].kind == "export" and copies[export.pk].expires_at == export.expires_at
    # Two older copies in an earlier month: the newer of them is that month's, the other goes.
    month = (timezone.now().replace(day=1) - timedelta(days=40)).replace(day=1, hour=12)
    older, oldest = copies[backups[1].pk], copies[backups[0].pk]
    OffsiteCopy.objects.filter(pk=older.pk).update(source_created_at=month + timedelta(days=2))
    OffsiteCopy.objects.filter(pk=oldest.pk).update(source_created_at=month + timedelta(days=1))
    # The primary's retention drops a backup: its off-site copy stays (longer retention).
    backup_delete(backup=backups[1], reason="beyond retention", actor=ACTOR)
    older.refresh_from_db()
    assert older.backup_id is None and older.status == OffsiteCopy.Status.VERIFIED
    plan = svc.offsite_prune(dry_run=True, actor=ACTOR)
    assert [(c.pk, reason) for c, reason in plan] == [(oldest.pk, "beyond the off-site retention")]
    call_command("offsite_copies", "--prune")
    assert not OffsiteCopy.objects.filter(pk=oldest.pk).exists()
    keys = {o["Key"] for o in far.list_objects_v2(Bucket=far_bucket, Prefix="far/")["Contents"]}
    assert f"far/{oldest.location}" not in keys and f"far/{older.location}" in keys
    assert f"far/{older.location}.manifest.json" in keys
    assert AuditEvent.objects.filter(action="offsite.pruned", target=str(oldest.pk)).exists()
    # The shop is deprovisioned and its erasure date passes: its copies are erased too.
    Tenant.objects.filter(pk=shop.pk).update(status=Tenant.Status.DELETED)
    Backup.objects.filter(tenant=shop).update(expires_at=timezone.now() - timedelta(minutes=1))
    svc.offsite_prune(dry_run=False, actor=ACTOR)
    left = OffsiteCopy.objects.filter(tenant=shop).exclude(kind="export")
    assert not left.exists()
    assert AuditEvent.objects.filter(action="offsite.erased").count() == 2


def test_bad_inputs_are_refused_with_what_to_fix(make_tenant, offsite, settings):
    from backups.errors import BackupError, BackupStateError

    shop = make_tenant("acme")
    queued = backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR, enqueue=False)
    with pytest.raises(BackupStateError, match="is queued; only verified backups are copied"):
        svc.offsite_copy_queue(backup=queued, actor=ACTOR)
    with pytest.raises(BackupError, match="one backup or one export"):
        svc.offsite_copy_queue(actor=ACTOR)
    backup = backup_run(backup_id=queued.pk, actor=ACTOR)
    (copy,) = OffsiteCopy.objects.all()
    with pytest.raises(BackupStateError, match="is queued; only verified copies are checked again"):
        svc.offsite_copy_verify(copy=copy, actor=ACTOR)
    settings.BACKUP_OFFSITE_S3_BUCKET = "no-such-bucket-here"  # a typo in the bucket's name
    failed = svc.offsite_copy_run(copy_id=str(copy.pk), actor=ACTOR)
    assert failed.status == OffsiteCopy.Status.FAILED
    assert "Bucket 'no-such-bucket-here' does not exist; create it or fix BACKUP_OFFSITE_S3_BUCKET" in (
        failed.status_reason
    )
    with pytest.raises(CommandError, match="1 failed and 0 corrupt off-site copies"):
        call_command("offsite_copies")
    assert backup.status == Backup.Status.VERIFIED  # the primary backup is not affected


def test_the_sweep_recovers_copies_a_dead_worker_or_a_lost_job_left_behind(make_tenant, offsite, settings):
    import django_rq

    shop = make_tenant("acme")
    backup_tenant_now(tenant=shop, actor=ACTOR)
    (copy,) = OffsiteCopy.objects.all()
    queue = django_rq.get_queue("backups")
    assert [j.func_name for j in queue.jobs] == ["backups.jobs.offsite_copy_job"]
    queue.empty()  # the job is lost (Redis flushed)
    later = timezone.now() + timedelta(minutes=16)
    assert svc.offsite_sweep(actor=ACTOR, now=later).requeued == 1
    assert [j.args[0] for j in queue.jobs] == [str(copy.pk)]
    # A worker died mid-copy: after BACKUP_STALE_AFTER_SECONDS the copy is failed and retried.
    OffsiteCopy.objects.filter(pk=copy.pk).update(
        status=OffsiteCopy.Status.COPYING, started_at=timezone.now()
    )
    stale = timezone.now() + timedelta(seconds=settings.BACKUP_STALE_AFTER_SECONDS + 1)
    assert svc.offsite_sweep(actor=ACTOR, now=stale).requeued == 1
    copy.refresh_from_db()
    assert copy.status == OffsiteCopy.Status.FAILED and "stopped mid-copy" in copy.status_reason
    assert svc.offsite_sweep(actor=ACTOR, now=copy.next_attempt_at).retried == 1
    (done,) = copy_all_here()
    assert done.status == OffsiteCopy.Status.VERIFIED
