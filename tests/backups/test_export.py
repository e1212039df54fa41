"""Tenant data exports: a job makes the archive in the backup store; staff download it by a short link."""

import csv
import hashlib
import io
import tarfile
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from backups.errors import BackupError
from backups.models import Export
from backups.services.exports import export_create, export_run
from backups.services.retention import backup_prune
from backups.services.runs import backup_reap
from core.audit import Actor
from core.models import AuditEvent
from tests.backups.conftest import add_products, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def archive_products(body: bytes, subdomain: str) -> list[list[str]]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert f"{subdomain}/manifest.json" in archive.getnames()
        member = archive.extractfile(f"{subdomain}/storefront_product.csv")
        return list(csv.reader(io.TextIOWrapper(member)))


def download(staff, export: Export) -> bytes:
    link = staff.get(f"/admin/backups/export/{export.pk}/download/")
    assert link.status_code == 302
    if link["Location"].startswith("http"):  # presigned (S3)
        return urllib.request.urlopen(link["Location"], timeout=10).read()
    return b"".join(staff.get(link["Location"]).streaming_content)


def test_admin_action_queues_exports_the_worker_makes_them_and_staff_download_them(
    staff, make_tenant, run_backup_worker, settings
):
    acme, bolt = make_tenant("acme"), make_tenant("bolt")
    add_products("acme", 30, "a-")
    add_products("bolt", 3, "b-")
    page = staff.post(
        "/admin/tenants/tenant/",
        {"action": "export_data", "_selected_action": [acme.pk, bolt.pk]},
        follow=True,
    ).content.decode()
    assert "2 export(s) queued" in page and "/admin/backups/export/" in page
    listing = staff.get("/admin/backups/export/").content.decode()
    assert "waiting for a worker" in listing
    run_backup_worker()
    export = Export.objects.get(tenant=acme)
    assert export.status == Export.Status.READY, export.status_reason
    assert export.tables["storefront_product"] == 30 and export.tables_done == export.tables_total > 1
    assert export.expires_at > timezone.now() + timedelta(days=settings.BACKUP_EXPORT_KEEP_DAYS - 1)
    listing = staff.get("/admin/backups/export/").content.decode()
    assert "ready" in listing and f"/admin/backups/export/{export.pk}/download/" in listing
    body = download(staff, export)
    assert hashlib.sha256(body).hexdigest() == export.sha256 and len(body) == export.size_bytes
    products = archive_products(body, "acme")
    assert products[0] == ["id", "name", "price", "created_at"]
    assert sorted(r[1] for r in products[1:]) == sorted(r[1] for r in table_rows("acme"))
    assert len(archive_products(download(staff, Export.objects.get(tenant=bolt)), "bolt")) == 4
    actions = set(AuditEvent.objects.filter(tenant=acme).values_list("action", flat=True))
    assert {"export.queued", "tenant.exported", "export.link_issued"} <= actions
    # The local link is signed and short-lived.
    link = staff.get(f"/admin/backups/export/{export.pk}/download/")["Location"]
    assert staff.get(link + "x").status_code == 404
    settings.BACKUP_DOWNLOAD_LINK_SECONDS = -1
    assert staff.get(link).status_code == 404


def test_export_to_s3_has_a_presigned_link(staff, make_tenant, s3):
    client, bucket = s3
    shop = make_tenant("acme")
    add_products("acme", 5, "p-")
    export = export_run(export_id=export_create(tenant=shop, actor=ACTOR, enqueue=False).pk, actor=ACTOR)
    assert export.status == Export.Status.READY
    head = client.head_object(Bucket=bucket, Key=f"platform/{export.location}")
    assert head["ContentLength"] == export.size_bytes and head["ServerSideEncryption"] == "AES256"
    location = staff.get(f"/admin/backups/export/{export.pk}/download/")["Location"]
    assert "X-Amz-Signature=" in location
    assert len(archive_products(download(staff, export), "acme")) == 6


def test_a_failed_export_leaves_no_object_and_frees_the_tenant(make_tenant, s3, settings):
    client, bucket = s3
    shop = make_tenant("acme")
    settings.BACKUP_S3_BUCKET = "no-such-bucket"
    export = export_create(tenant=shop, actor=ACTOR, enqueue=False)
    with pytest.raises(BackupError, match="does not exist"):
        export_run(export_id=export.pk, actor=ACTOR)
    export.refresh_from_db()
    assert export.status == Export.Status.FAILED and "does not exist" in export.status_reason
    assert AuditEvent.objects.filter(action="export.failed", target=str(export.pk)).exists()
    settings.BACKUP_S3_BUCKET = bucket
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    again = export_run(export_id=export_create(tenant=shop, actor=ACTOR, enqueue=False).pk, actor=ACTOR)
    assert again.status == Export.Status.READY


def test_one_export_per_tenant_at_a_time_and_only_of_live_shops(make_tenant):
    shop = make_tenant("acme")
    export_create(tenant=shop, actor=ACTOR, enqueue=False)
    with pytest.raises(BackupError, match="already queued or running"):
        export_create(tenant=shop, actor=ACTOR, enqueue=False)
    shop.status = shop.Status.DEPROVISIONING
    shop.save()
    with pytest.raises(BackupError, match="Cannot export 'acme': it is deprovisioning"):
        export_run(export_id=Export.objects.get().pk, actor=ACTOR)
    assert Export.objects.get().status == Export.Status.FAILED


def test_expired_exports_are_deleted_object_and_row(make_tenant, backup_dir, capsys):
    shop = make_tenant("acme")
    export = export_run(export_id=export_create(tenant=shop, actor=ACTOR, enqueue=False).pk, actor=ACTOR)
    stored = backup_dir / export.location
    assert stored.is_file()
    call_command("prune_backups", "--dry-run")
    assert Export.objects.count() == 1
    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    call_command("prune_backups", "--dry-run")
    assert "would delete export" in capsys.readouterr().out and stored.is_file()
    backup_prune(dry_run=False, actor=ACTOR)
    assert not Export.objects.exists() and not stored.exists()
    assert AuditEvent.objects.get(action="export.deleted").details["reason"] == "expired"


def test_an_export_whose_worker_died_is_failed_by_the_reaper(make_tenant, backup_dir, settings):
    shop = make_tenant("acme")
    export = export_create(tenant=shop, actor=ACTOR, enqueue=False)
    partial = backup_dir / "exports" / "x.tar.gz.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half an archive")
    stale = timezone.now() - timedelta(hours=1)
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.RUNNING,
        heartbeat_at=stale,
        location="exports/x.tar.gz",
        pending_upload_id="partial-file",
    )
    assert backup_reap(actor=ACTOR) == 1
    export.refresh_from_db()
    assert export.status == Export.Status.FAILED and "stopped mid-export" in export.status_reason
    assert export.pending_upload_id == "" and not partial.exists()
    assert export_create(tenant=shop, actor=ACTOR, enqueue=False).status == Export.Status.QUEUED


def test_the_command_still_writes_a_file_or_queues_a_job(make_tenant, tmp_path, run_backup_worker, capsys):
    shop = make_tenant("acme")
    add_products("acme", 4, "p-")
    out = tmp_path / "acme.tar.gz"
    call_command("export_tenant", "acme", "--output", str(out))
    assert len(archive_products(out.read_bytes(), "acme")) == 5
    call_command("export_tenant", "acme", "--queue")
    assert "queued" in capsys.readouterr().out
    run_backup_worker()
    assert Export.objects.get(tenant=shop).status == Export.Status.READY


def test_read_only_staff_cannot_download_an_export(make_tenant):
    from django.contrib.auth.models import Permission

    export = export_run(
        export_id=export_create(tenant=make_tenant("acme"), actor=ACTOR, enqueue=False).pk, actor=ACTOR
    )
    viewer = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_export", "view_tenant"]))
    client = Client(HTTP_HOST="localhost")
    client.force_login(viewer)
    assert client.get("/admin/backups/export/").status_code == 200
    assert client.get(f"/admin/backups/export/{export.pk}/download/").status_code == 403
    assert "export_data" not in client.get("/admin/tenants/tenant/").content.decode()
