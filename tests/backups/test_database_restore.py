"""restore_database: a whole-database (or platform) backup into a new database, checked, or nothing."""

import hashlib
import json
import re
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups import pgtools
from backups.models import Backup
from backups.services.runs import backup_create, backup_run, backup_tenant_now
from core.audit import Actor
from core.models import AuditEvent
from tests.backups.conftest import add_products, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)
PUBLIC_TABLES = ("tenants_tenant", "tenants_domain", "tenants_plan", "tenants_auditevent")


def databases() -> set[str]:
    """The server's databases, less those other xdist workers create and drop meanwhile: their
    test databases (``test_<name>_gw1``...), scratch databases (drills, restores) and the bench
    smoke tests' databases (``bench_*``)."""
    ours = pgtools.scratch_prefix()
    live = pgtools.database_params()["dbname"]
    sibling = re.compile(re.escape(re.sub(r"_gw\d+$", "", live)) + r"_gw\d+")
    with pgtools.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    theirs = {name for name in names if name.startswith(("scratch_", "bench_")) or sibling.fullmatch(name)}
    return {name for name in names if name == live or name.startswith(ours) or name not in theirs}


@pytest.fixture
def shops(make_tenant):
    acme, bolt = make_tenant("acme"), make_tenant("bolt")
    add_products(acme.schema_name, 40, "a-")
    add_products(bolt.schema_name, 25, "b-")
    return acme, bolt


def take(kind: str) -> Backup:
    return backup_run(backup_id=backup_create(kind=kind, actor=ACTOR, enqueue=False).pk, actor=ACTOR)


def test_whole_database_restore_into_a_new_database_row_by_row(shops, target, capsys):
    backup = take(Backup.Kind.DATABASE)
    call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    out = capsys.readouterr().out
    assert "restoring (checking sha256 on the way):" in out and "(100%)" in out
    assert "all matching the manifest" in out and "migrate_schemas" in out
    for schema in ("acme", "bolt"):
        for table in ("storefront_product", "django_migrations"):
            assert table_rows(schema, table, dbname=target) == table_rows(schema, table)
        # Users come back with their passwords; last_login moves to the restore (it voids old
        # set-password links, tests/backups/test_no_secrets_in_dumps.py).
        restored, live = table_rows(schema, "auth_user", dbname=target), table_rows(schema, "auth_user")
        assert [u[:2] + u[3:] for u in restored] == [u[:2] + u[3:] for u in live]
    for table in PUBLIC_TABLES[:3]:
        assert table_rows("public", table, dbname=target) == table_rows("public", table)
    with pgtools.connect(target) as conn:
        # The restored control plane knows this backup finished (it was running when dumped) ...
        status = conn.execute("SELECT status FROM backups_backup WHERE id = %s", [backup.pk]).fetchone()[0]
        # ... and that it was restored.
        restored = conn.execute(
            "SELECT details FROM tenants_auditevent WHERE action = 'database.restored'"
        ).fetchone()[0]
    assert status == "verified"
    assert restored["rows"] == sum(sum(t.values()) for t in backup.manifest["tables"].values())
    event = AuditEvent.objects.get(action="database.restored")
    assert event.target == str(backup.pk) and event.details["target"] == target
    assert not [db for db in databases() if "_restoring_" in db]


def test_restore_from_the_store_alone_when_the_records_are_lost(shops, target, capsys):
    """--object: the manifest next to the object says what it is; no Backup row is read."""
    backup = take(Backup.Kind.DATABASE)
    Backup.objects.filter(pk=backup.pk).delete()
    call_command("restore_database", "--object", backup.location, "--target-database", target)
    assert table_rows("acme", dbname=target) == table_rows("acme")
    assert table_rows("public", "tenants_tenant", dbname=target) == table_rows("public", "tenants_tenant")


def test_platform_backup_restores_the_public_schema_only(shops, target):
    backup = take(Backup.Kind.PLATFORM)
    call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    for table in PUBLIC_TABLES[:3]:
        assert table_rows("public", table, dbname=target) == table_rows("public", table)
    with pgtools.connect(target) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert "acme" not in schemas and "public" in schemas


def test_an_existing_empty_database_is_filled(shops, target):
    pgtools.database_create(target)
    backup = take(Backup.Kind.DATABASE)
    call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    assert table_rows("bolt", dbname=target) == table_rows("bolt")


def test_bad_requests_are_refused_and_nothing_is_created(shops, target):
    backup = take(Backup.Kind.DATABASE)
    tenant_backup = backup_tenant_now(tenant=shops[0], actor=ACTOR)
    live = pgtools.database_params()["dbname"]
    pgtools.database_create(target)
    with pgtools.connect(target) as conn:
        conn.execute("CREATE TABLE something (id int)")
    before = databases()
    cases = [
        (["--backup", str(backup.pk), "--target-database", live], "is the live database"),
        (["--backup", str(backup.pk), "--target-database", target], "already exists and holds data"),
        (["--backup", str(backup.pk), "--target-database", "Bad-Name"], "is not a database name"),
        (["--backup", str(backup.pk), "--target-database", "template1"], "server's own databases"),
        (["--backup", str(tenant_backup.pk), "--target-database", "x_new"], "is a tenant backup"),
        (["--backup", str(uuid.uuid4()), "--target-database", "x_new"], "No backup with id"),
        (["--backup", "nope", "--target-database", "x_new"], "is not a backup id"),
        (["--object", "database/none.dump", "--target-database", "x_new"], "No manifest next to"),
        (["--target-database", "x_new"], "one of the arguments --backup --object --to-time --to-backup"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=message):
            call_command("restore_database", *args)
    assert databases() == before
    assert not AuditEvent.objects.filter(action__startswith="backup.database_restore").exists()


def test_checksum_mismatch_is_refused_before_anything_is_created(shops, target, backup_dir):
    backup = take(Backup.Kind.DATABASE)
    path = backup_dir / backup.location
    path.write_bytes(path.read_bytes()[:-10] + b"\0" * 10)
    before = databases()
    with pytest.raises(CommandError, match="Checksum mismatch.*Nothing was restored"):
        call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    assert databases() == before
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED


def forged(backup_dir, backup: Backup, data: bytes, **manifest_changes) -> str:
    """A copy of a backup under a new key with a manifest that matches ``data`` (checksum passes)."""
    key = f"database/forged-{uuid.uuid4().hex[:6]}.dump"
    (backup_dir / key).write_bytes(data)
    manifest = {
        **backup.manifest,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        **manifest_changes,
    }
    (backup_dir / (key + ".manifest.json")).write_text(json.dumps(manifest))
    return key


def test_a_failing_restore_leaves_no_database_behind(shops, target, backup_dir):
    backup = take(Backup.Kind.DATABASE)
    whole = (backup_dir / backup.location).read_bytes()
    before = databases()
    # pg_restore fails half-way: the archive ends early.
    truncated = forged(backup_dir, backup, whole[: len(whole) // 2])
    with pytest.raises(CommandError, match="pg_restore failed"):
        call_command("restore_database", "--object", truncated, "--target-database", target)
    assert databases() == before
    # The restore works but the rows are not what the manifest promised.
    tables = json.loads(json.dumps(backup.manifest["tables"]))
    tables["acme"]["storefront_product"] = 41
    wrong = forged(backup_dir, backup, whole, tables=tables)
    with pytest.raises(CommandError, match="not match the manifest: acme.storefront_product: manifest 41"):
        call_command("restore_database", "--object", wrong, "--target-database", target)
    assert databases() == before
    assert AuditEvent.objects.filter(action="database.restore_failed").count() == 2


def test_restoring_never_touches_the_live_database(shops, target):
    backup = take(Backup.Kind.DATABASE)
    add_products("acme", 5, "after-")  # the live shop moves on
    live_rows = table_rows("acme")
    call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    assert table_rows("acme") == live_rows and len(live_rows) == 45
    assert len(table_rows("acme", dbname=target)) == 40
