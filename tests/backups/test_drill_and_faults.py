"""Restore drills (pass and fail), data export, and faults: storage gone mid-upload, dead worker."""

import csv
import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.errors import BackupError
from backups.models import Backup, RestoreDrill
from backups.services.runs import backup_create, backup_reap, backup_tenant_now
from core.audit import Actor
from core.models import AuditEvent
from tests.backups.conftest import BACKUP_WORKER, add_products, scratch_databases, table_rows
from tests.backups.faultproxy import FaultProxy
from tests.conftest import BASE_DIR, subprocess_env

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def test_restore_drill_passes_and_records_rto(make_tenant, capsys):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 300, "p-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    call_command("restore_drill", "--sample", "5")
    assert "1 drill(s) passed" in capsys.readouterr().out
    drill = RestoreDrill.objects.get()
    assert drill.passed and drill.backup == backup and drill.rto_seconds > 0
    assert {c["check"] for c in drill.checks} == {"sha256", "restore", "row counts", "migration state"}
    assert all(c["ok"] for c in drill.checks)
    assert not scratch_databases()
    assert AuditEvent.objects.filter(action="drill.passed").exists()


def test_restore_drill_fails_on_a_corrupt_object(make_tenant, backup_dir):
    shop = make_tenant("acme")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    path = backup_dir / backup.location
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    with pytest.raises(CommandError, match="1 of 1 drill"):
        call_command("restore_drill", "--sample", "1")
    drill = RestoreDrill.objects.get()
    assert not drill.passed and "sha256" in [c["check"] for c in drill.checks if not c["ok"]]
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and "corrupt" in backup.status_reason


def test_restore_drill_fails_when_rows_do_not_match_the_manifest(make_tenant):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 10, "p-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    backup.manifest["tables"]["acme"]["storefront_product"] = 11
    backup.save()
    from backups.services.drills import drill_run

    drill = drill_run(backup=backup, actor=ACTOR)
    assert not drill.passed and "manifest 11 rows, restored 10" in drill.reason


def test_export_is_a_portable_archive_of_the_shop_tables(make_tenant, tmp_path):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 25, "p-")
    out = tmp_path / "acme.tar.gz"
    call_command("export_tenant", "acme", "--output", str(out))
    with tarfile.open(out) as archive:
        names = archive.getnames()
        products = list(csv.reader(io.TextIOWrapper(archive.extractfile("acme/storefront_product.csv"))))
    assert "acme/manifest.json" in names and "acme/auth_user.csv" in names
    assert products[0] == ["id", "name", "price", "created_at"] and len(products) == 26
    assert sorted(r[1] for r in products[1:]) == sorted(r[1] for r in table_rows("acme"))
    with pytest.raises(CommandError, match="already exists"):
        call_command("export_tenant", "acme", "--output", str(out))
    assert AuditEvent.objects.filter(action="tenant.exported", tenant=shop).count() == 1


def test_storage_gone_mid_upload_leaves_no_object_and_a_failed_record(make_tenant, s3, moto_port, settings):
    client, bucket = s3
    shop = make_tenant("acme")
    add_products(shop.schema_name, 20000, "a-product-with-a-longer-name-")
    proxy = FaultProxy(moto_port, cut_after_bytes=200_000)  # after a few 64 KiB parts
    settings.BACKUP_S3_ENDPOINT_URL = f"http://127.0.0.1:{proxy.port}"
    with pytest.raises(BackupError, match="Storage unreachable"):
        backup_tenant_now(tenant=shop, actor=ACTOR)
    assert proxy.cut_done
    backup = Backup.objects.get(tenant=shop)
    assert backup.status == Backup.Status.FAILED and "Storage unreachable" in backup.status_reason
    assert backup.pending_upload_id  # the abort could not reach the store either
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    # Once the store is back, the reaper aborts the unfinished upload: no parts are left behind.
    proxy.heal()
    backup_reap(actor=ACTOR)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    backup.refresh_from_db()
    assert backup.pending_upload_id == ""
    assert AuditEvent.objects.filter(action="backup.failed", target=str(backup.pk)).exists()


@pytest.mark.slow  # 150,000 rows
@pytest.mark.parametrize("store", ["s3", "local"])
def test_worker_killed_mid_backup_leaves_a_failed_record_and_no_object(
    make_tenant, store, request, settings, backup_dir
):
    client, bucket = request.getfixturevalue("s3") if store == "s3" else (None, None)
    shop = make_tenant("acme")
    add_products(shop.schema_name, 150000, "a-product-with-a-much-longer-name-to-fill-parts-")
    backup = backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR)
    # The backups queue's own worker, which runs jobs in its process: killing it kills the job.
    worker = subprocess.Popen(
        [sys.executable, *BACKUP_WORKER, "--burst"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            backup.refresh_from_db()
            if backup.status == Backup.Status.RUNNING and backup.pending_upload_id:
                break
            time.sleep(0.05)
        assert backup.status == Backup.Status.RUNNING, backup.status_reason
        os.killpg(worker.pid, signal.SIGKILL)  # the worker (and pg_dump) die at once
    finally:
        worker.wait(timeout=30)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.RUNNING  # nobody could record anything
    settings.BACKUP_STALE_AFTER_SECONDS = 0
    time.sleep(0.01)
    assert backup_reap(actor=ACTOR) == 1
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and "worker stopped" in backup.status_reason
    assert backup.pending_upload_id == ""
    if store == "s3":
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    else:
        assert not [p for p in backup_dir.rglob("*") if p.is_file()]  # the .partial file too
    # The lock is released: the tenant can be backed up again.
    assert backup_tenant_now(tenant=shop, actor=ACTOR).status == Backup.Status.VERIFIED


def test_an_interrupted_backup_is_failed_at_once_and_leaves_no_object(make_tenant, backup_dir, monkeypatch):
    """A worker's cold shutdown raises SystemExit inside the job: recorded there, not by the reaper."""
    from backups.services import runs as services

    shop = make_tenant("acme")
    add_products(shop.schema_name, 5000, "p-")
    monkeypatch.setattr(services, "HEARTBEAT_SECONDS", -1)  # report progress on every chunk

    def progress(size, elapsed):
        raise SystemExit()

    with pytest.raises(SystemExit):
        services.backup_tenant_now(tenant=shop, actor=ACTOR, progress=progress)
    backup = Backup.objects.get(tenant=shop)
    assert backup.status == Backup.Status.FAILED and "Interrupted (SystemExit)" in backup.status_reason
    assert backup.pending_upload_id == ""
    assert not [p for p in backup_dir.rglob("*") if p.is_file()]
    assert AuditEvent.objects.filter(action="backup.failed", target=str(backup.pk)).exists()


def test_a_run_declared_dead_while_still_going_leaves_no_object(
    make_tenant, settings, backup_dir, monkeypatch
):
    from backups.services import runs as services

    shop = make_tenant("acme")
    add_products(shop.schema_name, 5000, "p-")
    settings.BACKUP_STALE_AFTER_SECONDS = 0
    monkeypatch.setattr(services, "HEARTBEAT_SECONDS", -1)  # report progress on every chunk
    reaped = []

    def progress(size, elapsed):
        if not reaped:
            time.sleep(0.01)
            reaped.append(backup_reap(actor=ACTOR))  # e.g. a stuck pg_dump that came back later

    with pytest.raises(BackupError, match="declared dead while it ran"):
        services.backup_tenant_now(tenant=shop, actor=ACTOR, progress=progress)
    assert reaped == [1]
    backup = Backup.objects.get(tenant=shop)
    assert backup.status == Backup.Status.FAILED
    assert not [p for p in backup_dir.rglob("*") if p.is_file()]
