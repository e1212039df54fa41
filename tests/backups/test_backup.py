"""Backups of each kind, to the local folder and to S3 (moto), checked against the live data."""

import hashlib
import json
import urllib.request

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups import pgtools
from backups.errors import BackupError, BackupStateError
from backups.models import Backup
from backups.services.restore import restore_into_scratch
from backups.services.runs import backup_create, backup_run, backup_tenant_now
from backups.storage import backup_storage
from core.audit import Actor
from core.models import AuditEvent
from tenants.models import Tenant
from tests.backups.conftest import add_products, scratch_databases, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def restored_rows(backup: Backup, schema: str, table: str = "storefront_product") -> list[tuple]:
    with pgtools.scratch_database("test") as scratch:
        restore_into_scratch(backup, scratch)
        return table_rows(schema, table, dbname=scratch)


def test_tenant_backup_to_local_folder_round_trips_row_by_row(make_tenant, backup_dir):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 500, "acme-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)

    assert backup.status == Backup.Status.VERIFIED
    stored = backup_dir / backup.location
    assert stored.is_file() and not list(backup_dir.rglob("*.partial"))
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == backup.sha256
    assert stored.stat().st_size == backup.size_bytes
    m = backup.manifest
    assert m["schema"] == "acme" and m["tables"]["acme"]["storefront_product"] == 500
    assert m["migrations"]["acme"]["applied"] and m["server_version"].startswith(str(pgtools.server_major()))
    assert (
        json.loads((backup_dir / (backup.location + ".manifest.json")).read_text())["sha256"] == backup.sha256
    )
    assert restored_rows(backup, "acme") == table_rows("acme")
    assert restored_rows(backup, "acme", "auth_user") == table_rows("acme", "auth_user")
    assert not scratch_databases()
    actions = list(AuditEvent.objects.filter(target=str(backup.pk)).values_list("action", flat=True))
    assert set(actions) == {"backup.queued", "backup.uploaded", "backup.verified"}


def test_tenant_backup_streams_to_s3_multipart_with_encryption_and_presigned_link(make_tenant, s3):
    client, bucket = s3
    shop = make_tenant("acme")
    add_products(shop.schema_name, 20000, "acme-product-with-a-longer-name-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)

    assert backup.status == Backup.Status.VERIFIED and backup.storage == "s3"
    key = f"platform/{backup.location}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == backup.size_bytes
    assert head["ServerSideEncryption"] == "AES256"
    # More than one part: the dump was streamed, never held whole.
    assert backup.size_bytes > 2 * 64 * 1024 and "-" in head["ETag"]
    assert int(head["ETag"].strip('"').split("-")[1]) >= 3
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    url = backup_storage().download_url(backup.location, expires=60)
    body = urllib.request.urlopen(url, timeout=10).read()
    assert hashlib.sha256(body).hexdigest() == backup.sha256
    manifest = json.loads(client.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
    assert manifest["tables"]["acme"]["storefront_product"] == 20000
    assert restored_rows(backup, "acme") == table_rows("acme")


def toc_entries(dump: bytes) -> list[str]:
    """pg_restore's table of contents of a custom-format dump, without its header."""
    import subprocess

    listing = subprocess.run(
        [pgtools.pg_binary("pg_restore"), "--list"], input=dump, capture_output=True, check=True
    ).stdout.decode()
    return [line for line in listing.splitlines() if line and not line.startswith(";")]


def test_dump_flags_that_skip_catalog_reads_leave_nothing_out(make_tenant, backup_dir):
    import subprocess

    shop = make_tenant("acme")
    add_products(shop.schema_name, 5, "p-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    # No comment and no privilege in the schema: both flags, and the same objects as plain pg_dump
    # (sessions' rows aside: no dump holds them, tests/backups/test_no_secrets_in_dumps.py).
    assert backup.manifest["pg_dump_options"] == ["--no-comments", "--no-privileges"]
    cmd = [pgtools.pg_binary("pg_dump"), "--format=custom", "--schema=acme"]
    cmd.append("--exclude-table-data=*.django_session")
    env = pgtools.pg_env(pgtools.database_params())
    stock = subprocess.run(cmd, env=env, capture_output=True, check=True)
    assert toc_entries((backup_dir / backup.location).read_bytes()) == toc_entries(stock.stdout)

    with pgtools.connect() as conn:
        conn.execute("COMMENT ON TABLE acme.storefront_product IS 'the catalogue'")
        conn.execute("GRANT SELECT ON acme.storefront_product TO PUBLIC")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    assert backup.manifest["pg_dump_options"] == []
    with pgtools.scratch_database("test") as scratch:
        restore_into_scratch(backup, scratch)
        with pgtools.connect(scratch) as conn:
            comment, acl = conn.execute(
                "SELECT obj_description('acme.storefront_product'::regclass, 'pg_class'), relacl::text "
                "FROM pg_class WHERE oid = 'acme.storefront_product'::regclass"
            ).fetchone()
    assert comment == "the catalogue" and "=r/" in acl  # PUBLIC's SELECT came back


def test_platform_backup_round_trips_the_public_schema(make_tenant):
    make_tenant("acme")
    make_tenant("bolt")
    backup = backup_create(kind=Backup.Kind.PLATFORM, actor=ACTOR, enqueue=False)
    backup = backup_run(backup_id=backup.pk, actor=ACTOR)
    assert backup.status == Backup.Status.VERIFIED
    assert set(backup.manifest["tables"]) == {"public"}
    assert backup.manifest["tables"]["public"]["tenants_tenant"] == 2
    with pgtools.scratch_database("test", without_public=True) as scratch:
        restore_into_scratch(backup, scratch)
        for table in ("tenants_tenant", "tenants_domain", "tenants_plan"):
            assert table_rows("public", table, dbname=scratch) == table_rows("public", table)


def test_whole_database_backup_round_trips_every_schema(make_tenant):
    a, b = make_tenant("acme"), make_tenant("bolt")
    add_products(a.schema_name, 30, "a-")
    add_products(b.schema_name, 40, "b-")
    call_command("backup_platform", "--whole-database")
    backup = Backup.objects.get(kind=Backup.Kind.DATABASE)
    assert backup.status == Backup.Status.VERIFIED
    assert backup.manifest["tables"]["acme"]["storefront_product"] == 30
    assert backup.manifest["tables"]["bolt"]["storefront_product"] == 40
    with pgtools.scratch_database("test") as scratch:
        restore_into_scratch(backup, scratch)
        for schema in ("acme", "bolt"):
            assert table_rows(schema, dbname=scratch) == table_rows(schema)
        assert table_rows("public", "tenants_tenant", dbname=scratch) == table_rows(
            "public", "tenants_tenant"
        )


def test_backup_job_runs_on_the_real_worker(make_tenant, run_backup_worker):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 10, "x-")
    call_command("backup_tenant", "acme", "--queue")
    backup = Backup.objects.get(tenant=shop)
    assert backup.status == Backup.Status.QUEUED
    run_backup_worker()
    backup.refresh_from_db()
    assert backup.status == Backup.Status.VERIFIED, backup.status_reason
    assert backup.manifest["tables"]["acme"]["storefront_product"] == 10
    assert AuditEvent.objects.filter(action="backup.verified", actor__startswith="job ").exists()


def test_backup_all_prints_progress(make_tenant, capsys):
    make_tenant("acme")
    make_tenant("bolt")
    call_command("backup_tenant", "--all")
    out = capsys.readouterr().out
    assert "[1/2]" in out and "[2/2]" in out and "ETA" in out and "Backed up 2 tenant(s)" in out
    assert Backup.objects.filter(status=Backup.Status.VERIFIED).count() == 2


def test_one_backup_per_tenant_at_a_time(make_tenant):
    shop = make_tenant("acme")
    backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR, enqueue=False)
    with pytest.raises(BackupStateError, match="already queued or running"):
        backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR, enqueue=False)
    with pytest.raises(CommandError, match="already queued or running"):
        call_command("backup_tenant", "acme")
    assert Backup.objects.filter(tenant=shop).count() == 1
    # Another tenant is not blocked.
    backup_tenant_now(tenant=make_tenant("bolt"), actor=ACTOR)


def test_backup_refused_for_tenant_being_deprovisioned(make_tenant):
    shop = make_tenant("acme")
    Tenant.objects.filter(pk=shop.pk).update(status=Tenant.Status.DEPROVISIONING)
    with pytest.raises(BackupStateError, match="it is deprovisioning"):
        backup_tenant_now(tenant=shop, actor=ACTOR)
    assert not Backup.objects.exists()


def test_command_rejects_unknown_tenant_and_ambiguous_arguments(db):
    with pytest.raises(CommandError, match="No tenant with subdomain 'ghost'"):
        call_command("backup_tenant", "ghost")
    with pytest.raises(CommandError, match="not both"):
        call_command("backup_tenant")


def test_pg_dump_of_another_major_version_is_refused_clearly(make_tenant, settings, tmp_path):
    # A stand-in binary answering like pg_dump 14 (no second PostgreSQL version is installed here).
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (fake / name).write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.9'\n")
        (fake / name).chmod(0o755)
    settings.BACKUP_PG_BIN_DIR = str(fake)
    pgtools.pg_binary.cache_clear()
    shop = make_tenant("acme")
    with pytest.raises(BackupError, match=r"is PostgreSQL 14 but the server is PostgreSQL \d+; install"):
        backup_tenant_now(tenant=shop, actor=ACTOR)
    backup = Backup.objects.get(tenant=shop)
    assert backup.status == Backup.Status.FAILED and "postgresql-client-" in backup.status_reason
    pgtools.pg_binary.cache_clear()


def test_s3_bucket_missing_fails_with_what_to_fix(make_tenant, s3, settings):
    settings.BACKUP_S3_BUCKET = "no-such-bucket"
    shop = make_tenant("acme")
    with pytest.raises(BackupError, match="Bucket 'no-such-bucket' does not exist"):
        backup_tenant_now(tenant=shop, actor=ACTOR)
    assert Backup.objects.get(tenant=shop).status == Backup.Status.FAILED
