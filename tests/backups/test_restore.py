"""Restores: in place (atomic for readers), as a new tenant, and every bad input refused."""

import http.client
import re
import threading
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups import pgtools
from backups.errors import BackupError, BackupIntegrityError, BackupStateError
from backups.models import Backup, Restore
from backups.services.restore import backup_restore_as_new, backup_restore_in_place
from backups.services.runs import backup_create, backup_tenant_now
from core.audit import Actor
from core.models import AuditEvent
from tenants.models import Domain, Tenant
from tests.backups.conftest import add_products, all_schemas, scratch_databases, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def replace_products(schema: str, count: int, prefix: str) -> None:
    with pgtools.connect() as conn:
        conn.execute(f'DELETE FROM "{schema}".storefront_product')
    add_products(schema, count, prefix)


@pytest.fixture
def shop_with_backup(make_tenant):
    """acme with 120 'bak-' products backed up, then changed to 150 'new-' products."""
    shop = make_tenant("acme")
    add_products(shop.schema_name, 120, "bak-")
    backed_up = table_rows("acme")
    backup = backup_tenant_now(tenant=shop, actor=ACTOR)
    replace_products("acme", 150, "new-")
    return shop, backup, backed_up


def snapshot_state() -> tuple:
    """Everything a refused restore must leave alone."""
    return (
        all_schemas(),
        sorted(Tenant.objects.values_list("subdomain", "status")),
        sorted(Domain.objects.values_list("domain", "status")),
        table_rows("acme"),
        sorted(Backup.objects.values_list("id", "status")),
    )


def test_restore_in_place_brings_back_the_backup_and_keeps_a_safety_copy(shop_with_backup):
    shop, backup, backed_up = shop_with_backup
    before = table_rows("acme")
    schemas_before = all_schemas()
    restore = backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)

    assert restore.status == Restore.Status.SUCCEEDED
    assert table_rows("acme") == backed_up
    assert table_rows("acme", "auth_user") and all_schemas() == schemas_before
    safety = restore.safety_backup
    assert safety.purpose == Backup.Purpose.SAFETY and safety.status == Backup.Status.VERIFIED
    assert safety.manifest["tables"]["acme"]["storefront_product"] == 150
    # The safety copy really holds the replaced data: restoring it brings it back.
    backup_restore_in_place(tenant=shop, backup_id=safety.pk, confirm="acme", actor=ACTOR)
    assert table_rows("acme") == before
    actions = list(AuditEvent.objects.filter(tenant=shop).values_list("action", flat=True))
    assert actions.count("backup.restored") == 2 and "backup.restore_started" in actions
    assert not scratch_databases()


def test_restore_in_place_while_requests_read_the_shop_never_shows_a_mix(shop_with_backup, gunicorn):
    shop, backup, backed_up = shop_with_backup
    old_names = {r[1] for r in table_rows("acme")}
    new_names = {r[1] for r in backed_up}
    address = gunicorn(workers=2)
    host, port = address.split(":")
    seen = {"old": 0, "new": 0}
    problems: list[str] = []
    done = threading.Event()

    def read_shop():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for _ in range(5000):
            conn.request("GET", "/", headers={"Host": "acme.localhost"})
            response = conn.getresponse()
            body = response.read().decode()
            names = set(re.findall(r'<tr class="product"><td>([^<]+)</td>', body))
            if response.status != 200:
                problems.append(f"status {response.status}")
            elif names == old_names:
                seen["old"] += 1
            elif names == new_names:
                seen["new"] += 1
                if done.is_set() and seen["new"] > 20:
                    return
            else:
                problems.append(f"mixed or partial page: {len(names)} products")
        problems.append("reader ran out of iterations")

    reader = threading.Thread(target=read_shop)
    reader.start()
    while seen["old"] < 5 and reader.is_alive():
        threading.Event().wait(0.05)
    backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    done.set()
    reader.join(timeout=120)
    assert not problems, problems[:5]
    assert seen["old"] >= 5 and seen["new"] > 20


def test_restore_as_new_tenant_copies_the_data_and_registers_a_domain(shop_with_backup):
    shop, backup, backed_up = shop_with_backup
    source_rows = table_rows("acme")
    call_command("restore_tenant", "acme", "--backup", str(backup.pk), "--as-new", "acme-copy")

    copy = Tenant.objects.get(subdomain="acme-copy")
    assert copy.status == Tenant.Status.ACTIVE and copy.schema_name == "acme_copy"
    assert copy.plan_id == shop.plan_id and copy.owner_email == shop.owner_email
    assert Domain.objects.get(tenant=copy).domain == "acme-copy.localhost"
    assert table_rows("acme_copy") == backed_up
    # The users come back with their passwords; last_login moves to the restore (it voids old
    # set-password links, tests/backups/test_restore_logins.py).
    copied_users, source_users = table_rows("acme_copy", "auth_user"), table_rows("acme", "auth_user")
    assert [u[:2] + u[3:] for u in copied_users] == [u[:2] + u[3:] for u in source_users]
    assert table_rows("acme") == source_rows  # the source is untouched
    restore = Restore.objects.get(mode=Restore.Mode.AS_NEW)
    assert restore.status == Restore.Status.SUCCEEDED and restore.new_tenant == copy
    # And the copy routes: its shop answers with the restored products.
    from django.test import Client

    body = Client(HTTP_HOST="acme-copy.localhost").get("/").content.decode()
    assert "bak-0000001" in body and "new-0000001" not in body


def test_restoring_one_tenant_never_touches_another(make_tenant):
    a, b = make_tenant("acme"), make_tenant("bolt")
    add_products("acme", 50, "a-")
    add_products("bolt", 70, "b-")
    backup_a = backup_tenant_now(tenant=a, actor=ACTOR)
    backup_b = backup_tenant_now(tenant=b, actor=ACTOR)
    replace_products("acme", 5, "a2-")
    bolt_rows, bolt_users = table_rows("bolt"), table_rows("bolt", "auth_user")
    backup_restore_in_place(tenant=a, backup_id=backup_a.pk, confirm="acme", actor=ACTOR)
    assert table_rows("bolt") == bolt_rows and table_rows("bolt", "auth_user") == bolt_users
    assert len(table_rows("acme")) == 50
    backup_b.refresh_from_db()
    assert backup_b.status == Backup.Status.VERIFIED
    assert not Backup.objects.filter(tenant=b).exclude(pk=backup_b.pk).exists()


def test_bad_inputs_are_refused_and_nothing_is_touched(shop_with_backup, make_tenant):
    shop, backup, _ = shop_with_backup
    other = make_tenant("bolt")
    other_backup = backup_tenant_now(tenant=other, actor=ACTOR)
    queued = backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR, enqueue=False)
    failed = Backup.objects.create(
        kind=Backup.Kind.TENANT,
        tenant=shop,
        tenant_label="acme",
        status=Backup.Status.FAILED,
        status_reason="pg_dump failed: boom",
        storage="local",
    )
    state = snapshot_state()
    cases = [
        (["acme", "--backup", "not-an-id", "--confirm", "acme"], "is not a backup id"),
        (["acme", "--backup", str(uuid.uuid4()), "--confirm", "acme"], "No backup with id"),
        (["acme", "--backup", str(other_backup.pk), "--confirm", "acme"], "belongs to 'bolt', not 'acme'"),
        (["acme", "--backup", str(queued.pk), "--confirm", "acme"], "is queued; only verified"),
        (["acme", "--backup", str(failed.pk), "--confirm", "acme"], "is failed: pg_dump failed: boom"),
        (["acme", "--backup", str(backup.pk), "--confirm", "acmee"], "does not match 'acme'"),
        (["acme", "--backup", str(backup.pk), "--as-new", "bolt"], "Subdomain 'bolt' is taken"),
        (["acme", "--backup", str(backup.pk), "--as-new", "Bad_Name!"], "may contain only letters"),
        (["acme", "--backup", str(backup.pk), "--as-new", "admin"], "reserved"),
        (["acme", "--backup", str(backup.pk)], "needs --confirm"),
        (["ghost", "--backup", str(backup.pk), "--confirm", "ghost"], "No tenant with subdomain"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command("restore_tenant", *args, interactive=False)
        assert snapshot_state() == state, args
    assert not Restore.objects.exists()
    assert not scratch_databases()


def test_checksum_mismatch_is_refused_before_anything_changes(shop_with_backup, backup_dir):
    shop, backup, _ = shop_with_backup
    stored = backup_dir / backup.location
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    rows, schemas = table_rows("acme"), all_schemas()
    with pytest.raises(BackupIntegrityError, match="Checksum mismatch"):
        backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    assert table_rows("acme") == rows and all_schemas() == schemas
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and "Checksum mismatch" in backup.status_reason
    assert not Restore.objects.exists()
    # Now failed, it cannot be used for a copy either.
    with pytest.raises(BackupStateError, match="only verified backups"):
        backup_restore_as_new(backup_id=backup.pk, subdomain="acme-copy", actor=ACTOR)
    assert not Tenant.objects.filter(subdomain="acme-copy").exists()


def test_backup_refused_while_the_tenant_is_being_restored(shop_with_backup):
    shop, backup, _ = shop_with_backup
    Restore.objects.create(tenant=shop, backup=backup, mode=Restore.Mode.IN_PLACE)
    with pytest.raises(BackupStateError, match="being restored"):
        backup_tenant_now(tenant=shop, actor=ACTOR)
    with pytest.raises(BackupError, match="already being restored"):
        backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)


def test_restore_failing_half_way_leaves_the_shop_as_it_was(shop_with_backup):
    shop, backup, _ = shop_with_backup
    # A backup from a newer release: refused after the copy was made, before the swap.
    backup.manifest["migrations"]["acme"]["applied"].append("storefront.9999_from_the_future")
    backup.save()
    rows, schemas = table_rows("acme"), all_schemas()
    with pytest.raises(BackupStateError, match="taken by a newer release"):
        backup_restore_in_place(tenant=shop, backup_id=backup.pk, confirm="acme", actor=ACTOR)
    assert table_rows("acme") == rows and all_schemas() == schemas  # side schema dropped too
    restore = Restore.objects.get()
    assert restore.status == Restore.Status.FAILED and "newer release" in restore.status_reason
    assert AuditEvent.objects.filter(action="backup.restore_failed").exists()
    # As new: the half-made tenant is marked failed and its schema is gone.
    with pytest.raises(BackupStateError, match="taken by a newer release"):
        backup_restore_as_new(backup_id=backup.pk, subdomain="acme-copy", actor=ACTOR)
    copy = Tenant.objects.get(subdomain="acme-copy")
    assert copy.status == Tenant.Status.FAILED and "restore failed" in copy.status_reason
    assert "acme_copy" not in all_schemas() and not Domain.objects.filter(tenant=copy).exists()
    # The same subdomain can be retried with a good backup.
    good = backup_tenant_now(tenant=shop, actor=ACTOR)
    backup_restore_as_new(backup_id=good.pk, subdomain="acme-copy", actor=ACTOR)
    copy.refresh_from_db()
    assert copy.status == Tenant.Status.ACTIVE and table_rows("acme_copy") == rows
