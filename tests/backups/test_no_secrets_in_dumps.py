"""What backups and exports hold: never sessions; exports never password hashes either.

Live session keys in a dump would let whoever holds it (an operator who downloads a platform
backup, a shop owner with an export) act as any logged-in user, staff included.
"""

import csv
import hashlib
import io
import json
import subprocess
import tarfile
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.tokens import default_token_generator
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command

from backups import manifest as manifest_mod
from backups import pgtools
from backups.models import Backup
from backups.services.drills import drill_run
from backups.services.exports import tenant_export
from backups.services.retention import backup_before_erasure
from backups.services.runs import backup_create, backup_run, backup_tenant_now
from core.audit import Action, Actor
from core.db import connection
from core.models import AuditEvent
from tenants.models import Tenant
from tests.backups.conftest import add_products, table_rows

ACTOR = Actor.command("pytest")
PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.django_db(transaction=True)


def session_in(tenant: Tenant | None) -> str:
    """A real logged-in session in the shop's schema (or public), as the login view stores one."""
    if tenant is None:
        connection.set_schema_to_public()
    else:
        connection.set_tenant(tenant)
    try:
        store = SessionStore()
        store["_auth_user_id"] = "1"
        store.create()
        assert store.session_key
        return store.session_key
    finally:
        connection.set_schema_to_public()


def set_owner_password(tenant: Tenant) -> str:
    connection.set_tenant(tenant)
    try:
        owner = get_user_model().objects.get(username=tenant.owner_email)
        owner.set_password(PASSWORD)
        owner.save()
        return owner.password
    finally:
        connection.set_schema_to_public()


def restore_listing(dump: bytes, *args: str) -> str:
    return subprocess.run(
        [pgtools.pg_binary("pg_restore"), *args], input=dump, capture_output=True, check=True
    ).stdout.decode()


@pytest.fixture
def shop(make_tenant):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 10, "p-")
    return shop


def test_no_backup_holds_session_rows(shop, backup_dir):
    set_owner_password(shop)
    keys = [session_in(shop), session_in(shop), session_in(None)]
    backups = {
        "tenant": backup_tenant_now(tenant=shop, actor=ACTOR),
        "final": backup_before_erasure(tenant=shop, actor=ACTOR),
        **{
            kind: backup_run(backup_id=backup_create(kind=kind, actor=ACTOR, enqueue=False).pk, actor=ACTOR)
            for kind in (Backup.Kind.PLATFORM, Backup.Kind.DATABASE)
        },
    }
    schemas = {"tenant": ["acme"], "final": ["acme"], "platform": ["public"], "database": ["acme", "public"]}
    for name, backup in backups.items():
        dump = (backup_dir / backup.location).read_bytes()
        toc = restore_listing(dump, "--list")
        data = restore_listing(dump, "--data-only", "--file=-")
        for schema in schemas[name]:
            # The table is there (a restore can log people in again), its rows are not.
            assert f"TABLE {schema} django_session " in toc, name
            assert f"TABLE DATA {schema} django_session " not in toc, name
            assert backup.manifest["tables"][schema]["django_session"] == 0, name
        assert not [key for key in keys if key in data], name
        assert backup.manifest["excluded_table_data"] == ["django_session"]
    # Backups used for restores keep password hashes: restored users log in as before.
    assert "pbkdf2_sha256$" in restore_listing((backup_dir / backups["tenant"].location).read_bytes(), "-f-")
    # The manifest's 0 is what a restore finds: a drill of it passes.
    assert drill_run(backup=backups["tenant"], actor=ACTOR).passed


def test_export_holds_no_sessions_and_no_password_hashes(shop):
    set_owner_password(shop)
    key = session_in(shop)
    out = io.BytesIO()
    summary = tenant_export(tenant=shop, out=out, actor=ACTOR)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert "acme/django_session.csv" not in files and "django_session" not in summary["tables"]
    assert "acme/storefront_product.csv" in files
    everything = b"".join(files.values())
    assert key.encode() not in everything and b"pbkdf2_sha256$" not in everything
    users = list(csv.DictReader(io.StringIO(files["acme/auth_user.csv"].decode())))
    assert [u["username"] for u in users] == ["owner@acme.test"]
    assert all(u["password"] == "!" and not is_password_usable(u["password"]) for u in users)
    left_out = json.loads(files["acme/manifest.json"])["left_out"]
    assert set(left_out) == {"django_session", "auth_user.password"}
    # It still loads into a users table as it is; each user sets a new password by link.
    with pgtools.connect() as conn:
        conn.execute("CREATE TEMP TABLE loaded (LIKE acme.auth_user INCLUDING ALL)")
        with conn.cursor().copy("COPY loaded FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
            copy.write(files["acme/auth_user.csv"])
        assert conn.execute("SELECT username, password FROM loaded").fetchall() == [("owner@acme.test", "!")]


def sessions_in(dbname: str) -> int:
    with pgtools.connect(dbname) as conn:
        return sum(
            conn.execute(f'SELECT count(*) FROM "{schema}".django_session').fetchone()[0]
            for schema in ("acme", "public")
        )


def owner_in(dbname: str, tenant: Tenant):
    """The shop owner's row as the database ``dbname`` holds it (an unsaved model instance)."""
    with pgtools.connect(dbname) as conn:
        row = conn.execute(
            f'SELECT id, password, last_login, email FROM "{tenant.schema_name}".auth_user '
            "WHERE username = %s",
            [tenant.owner_email],
        ).fetchone()
    assert row is not None
    pk, password, last_login, email = row
    return get_user_model()(pk=pk, username=tenant.owner_email, password=password, last_login=last_login,
                            email=email)


def test_restore_database_brings_back_no_sessions_even_from_an_old_backup(shop, target, backup_dir):
    session_in(shop), session_in(None)
    hashed = set_owner_password(shop)
    backup = backup_run(
        backup_id=backup_create(kind=Backup.Kind.DATABASE, actor=ACTOR, enqueue=False).pk, actor=ACTOR
    )
    # A set-password link issued before the restore (say to someone who has left since) is void after it.
    link = default_token_generator.make_token(owner_in(pgtools.database_params()["dbname"], shop))
    call_command("restore_database", "--backup", str(backup.pk), "--target-database", target)
    assert sessions_in(target) == 0 and table_rows("acme", dbname=target) == table_rows("acme")
    restored = owner_in(target, shop)
    assert restored.password == hashed and restored.check_password(PASSWORD)  # logins work as before
    assert not default_token_generator.check_token(restored, link)
    assert default_token_generator.check_token(restored, default_token_generator.make_token(restored))
    event = AuditEvent.objects.filter(action=Action.DATABASE_RESTORED).latest("created_at")
    assert event.details["set_password_links_invalidated"] >= 1
    pgtools.database_drop(target)

    # A backup taken before sessions were left out (a plain pg_dump, its manifest counting them).
    cmd, env = pgtools.dump_command(schema=None)
    dump = subprocess.run([c for c in cmd if "django_session" not in c], env=env, capture_output=True).stdout
    with pgtools.connect() as conn:
        contents = manifest_mod.read_contents(conn, None)
    assert contents["tables"]["acme"]["django_session"] == 1
    key = f"database/old-{uuid.uuid4().hex[:6]}.dump"
    (backup_dir / key).write_bytes(dump)
    manifest = {
        **backup.manifest,
        **contents,
        "sha256": hashlib.sha256(dump).hexdigest(),
        "size_bytes": len(dump),
    }
    manifest.pop("excluded_table_data")
    (backup_dir / (key + ".manifest.json")).write_text(json.dumps(manifest))
    call_command("restore_database", "--object", key, "--target-database", target)
    assert sessions_in(target) == 0 and table_rows("acme", dbname=target) == table_rows("acme")
