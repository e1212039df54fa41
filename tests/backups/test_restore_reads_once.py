"""Restores read the stored object once: the bytes whose sha256 is checked are the bytes restored.

The store is moto's S3 server behind a proxy that answers one chosen GET of the object with other
bytes (a valid dump of the same shape, products renamed), as a store that changes its answer
between two reads would. Read twice (check, then restore), the check passes and the other bytes
are restored; read once, either the checked bytes are restored or the mismatch is refused.
"""


import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups import pgtools
from backups.errors import BackupIntegrityError
from backups.models import Backup, Restore
from backups.services.restore import backup_restore_in_place
from backups.services.runs import backup_create, backup_run, backup_tenant_now
from backups.storage import backup_storage
from core.audit import Actor
from tests.backups.conftest import add_products, table_rows
from tests.backups.faultproxy import TamperingHTTPProxy

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def rename_products(schema: str, dbname: str | None = None) -> None:
    with pgtools.connect(dbname) as conn:
        conn.execute(f"UPDATE \"{schema}\".storefront_product SET name = 'evil-' || name")


@pytest.fixture
def through_proxy(s3, moto_port, settings):
    """Point the backup store at a tampering proxy in front of moto; closed afterwards."""
    proxies = []

    def make(key: str, replacement: bytes, tamper_reads: set[int]) -> TamperingHTTPProxy:
        proxy = TamperingHTTPProxy(moto_port, key=key, replacement=replacement, tamper_reads=tamper_reads)
        proxies.append(proxy)
        settings.BACKUP_S3_ENDPOINT_URL = f"http://127.0.0.1:{proxy.port}"
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def other_database_dump(backup: Backup) -> bytes:
    """The same database with its products renamed: same tables, same row counts, other bytes."""
    with pgtools.scratch_database("evil") as scratch:
        import subprocess

        cmd, env = pgtools.restore_command(dbname=scratch, single_transaction=False)
        subprocess.run(cmd, env=env, input=backup_storage().get_bytes(backup.location), check=True)
        rename_products("acme", scratch)
        cmd, env = pgtools.dump_command(schema=None, dbname=scratch)
        return subprocess.run(cmd, env=env, capture_output=True, check=True).stdout


def test_restore_database_from_object_restores_the_bytes_it_checked(make_tenant, s3, through_proxy, target):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 30, "a-")
    backup = backup_run(
        backup_id=backup_create(kind=Backup.Kind.DATABASE, actor=ACTOR, enqueue=False).pk, actor=ACTOR
    )
    live = table_rows("acme")
    proxy = through_proxy(backup.location, other_database_dump(backup), {2})

    # A second read would get the renamed products; there is none.
    call_command("restore_database", "--object", backup.location, "--target-database", target)
    assert table_rows("acme", dbname=target) == live
    assert proxy.reads == 1

    # When the one read is the other bytes: refused, and no database is left behind.
    pgtools.database_drop(target)
    with pytest.raises(CommandError, match="Checksum mismatch.*Nothing was restored"):
        call_command("restore_database", "--object", backup.location, "--target-database", target)
    assert proxy.reads == 2
    with pgtools.connect() as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE starts_with(datname, %s)", [target]).fetchone()
    assert not left


def test_restore_in_place_restores_the_bytes_it_checked(make_tenant, s3, through_proxy):
    shop = make_tenant("acme")
    add_products(shop.schema_name, 30, "a-")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    backed_up = table_rows("acme")
    rename_products("acme")
    other = backup_tenant_now(tenant=shop, actor=ACTOR)  # same shape, renamed products
    proxy = through_proxy(backup.location, backup_storage().get_bytes(other.location), {2})

    restore = backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    assert restore.status == Restore.Status.SUCCEEDED
    assert table_rows("acme") == backed_up  # not the renamed products
    assert proxy.reads == 1

    # When the one read is the other bytes: refused before anything changes, the backup failed.
    rename_products("acme")
    live = table_rows("acme")
    with pytest.raises(BackupIntegrityError, match="Checksum mismatch"):
        backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    assert proxy.reads == 2
    assert table_rows("acme") == live and Restore.objects.count() == 1
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED
