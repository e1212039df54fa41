"""Restoring a tenant backup: over the shop itself (in place, atomically) or as a new shop.

The ``*_check`` functions do every check that needs no download, so the admin can refuse a bad
request before it queues the job; the services run them again.
"""

import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_exists

from backups import pgtools
from backups.errors import BackupError, BackupStateError
from backups.models import Backup, Restore
from backups.selectors import backup_get
from backups.services import runs  # a module: see jobs.py on the import cycle
from backups.services._common import (
    BACKUPABLE_STATUSES,
    check_verified_and_here,
    error_reason,
    reraise,
)
from backups.services.integrity import Checksum, restore_verified
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.migration_state import expected_migration_keys
from tenants.models import Domain, Tenant
from tenants.routing import routes_forget, tenant_routes_forget
from tenants.services import platform_host_for, tenant_activate, tenant_request
from tenants.validation import schema_name_for, subdomain_normalise


def _check_restorable(backup: Backup) -> None:
    if backup.kind != Backup.Kind.TENANT:
        raise BackupStateError(
            f"Backup {backup.pk} is a {backup.kind} backup; restore_tenant takes tenant backups "
            "(restore_database restores database and platform backups into a new database)."
        )
    check_verified_and_here(backup)


@contextmanager
def _verified_copy(backup: Backup, actor: Actor) -> Iterator[str]:
    """A scratch database holding the backup, restored from one read of the object, its sha256 checked.

    Done before anything else changes: a mismatch fails the backup and leaves everything as it was.
    Sessions an older backup may still carry never leave it: the copy into our database is a dump,
    which leaves their rows out (pgtools.EXCLUDED_TABLE_DATA).
    """
    with pgtools.scratch_database() as scratch:
        restore_verified(
            location=backup.location,
            sha256=backup.sha256,
            size_bytes=backup.size_bytes,
            dbname=scratch,
            backup=backup,
            actor=actor,
            consequence="Nothing was restored; pick another backup.",
        )
        yield scratch


def restore_into_scratch(backup: Backup, scratch_db: str) -> Checksum:
    """Restore a backup object as it is into a scratch database, from one read whose sha256 is checked.

    A mismatch raises BackupIntegrityError (the backup row is left as it is; the caller drops the
    scratch database).
    """
    return restore_verified(
        location=backup.location,
        sha256=backup.sha256,
        size_bytes=backup.size_bytes,
        dbname=scratch_db,
        backup=None,
        actor=Actor.system("restore into scratch"),
        consequence="The scratch copy is not to be trusted.",
    )


def _copy_schema_in(backup: Backup, scratch: str, target_schema: str) -> None:
    """Create ``target_schema`` in our database from a verified scratch copy of a tenant backup.

    pg_restore cannot rename a schema, so: rename it in the scratch database, dump the renamed
    schema and pipe it into our database in one transaction (all or nothing).
    """
    source = backup.manifest.get("schema") or backup.schema_name
    if source != target_schema:
        with pgtools.connect(scratch, autocommit=True) as conn:
            conn.execute(
                f"ALTER SCHEMA {quote_schema_name(source)} RENAME TO {quote_schema_name(target_schema)}"
            )
    dump_cmd, dump_env = pgtools.dump_command(schema=target_schema, dbname=scratch)
    restore_cmd, restore_env = pgtools.restore_command(dbname=pgtools.database_params()["dbname"])
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
        dump = subprocess.Popen(dump_cmd, env=dump_env, stdout=subprocess.PIPE, stderr=dump_err)
        restore = subprocess.Popen(
            restore_cmd, env=restore_env, stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=restore_err
        )
        assert dump.stdout is not None  # stdout=PIPE
        dump.stdout.close()
        restore_rc, dump_rc = restore.wait(), dump.wait()
        if dump_rc != 0:
            dump_err.seek(0)
            raise BackupError(f"pg_dump of the scratch copy failed: {pgtools.stderr_tail(dump_err.read())}")
        if restore_rc != 0:
            restore_err.seek(0)
            raise BackupError(f"pg_restore failed: {pgtools.stderr_tail(restore_err.read())}")


def _invalidate_logins(cursor: CursorWrapper, schema: str) -> dict[str, int]:
    """Delete a restored schema's sessions and void its users' set-password links, in the caller's
    transaction.

    Set-password (reset) tokens hash the user's password and last_login: setting last_login to now
    voids every token made before, for every user, while passwords (and so logins) stay as backed up.
    """
    quoted = quote_schema_name(schema)
    cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        [f"{quoted}.django_session", f"{quoted}.auth_user"],
    )
    has_sessions, has_users = cursor.fetchone()
    done = {"sessions_deleted": 0, "set_password_links_invalidated": 0}
    if has_sessions:
        cursor.execute(f"DELETE FROM {quoted}.django_session")
        done["sessions_deleted"] = max(cursor.rowcount, 0)
    if has_users:
        cursor.execute(f"UPDATE {quoted}.auth_user SET last_login = now()")
        done["set_password_links_invalidated"] = max(cursor.rowcount, 0)
    return done


def _bring_migrations_current(backup: Backup, schema_name: str) -> None:
    migrations: dict[str, dict[str, Any]] = backup.manifest.get("migrations", {})
    applied = set(next(iter(migrations.values()), {}).get("applied", []))
    migrations_bring_current(applied, schema_name, source=f"Backup {backup.pk}")


def migrations_bring_current(applied: set[str], schema_name: str, *, source: str) -> None:
    """Apply to ``schema_name`` what the code has beyond ``applied``; refuse a newer release's data."""
    unknown = sorted(applied - set(expected_migration_keys()))
    if unknown:
        raise BackupStateError(
            f"{source} was taken by a newer release "
            f"(unknown migrations: {', '.join(unknown[:5])}); "
            "deploy that release before restoring it."
        )
    if applied != set(expected_migration_keys()):
        try:
            call_command("migrate_schemas", schema_name=schema_name, interactive=False, verbosity=0)
        finally:
            connection.set_schema_to_public()


def _drop_schema(name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(name)} CASCADE")


def restore_start(
    *,
    tenant: Tenant,
    backup: Backup | None,
    mode: str,
    actor: Actor,
    target: str = "",
    new_tenant: Tenant | None = None,
    to_time: datetime | None = None,
) -> Restore:
    """The Restore row (the per-tenant restore lock) and its audit event.

    ``to_time`` instead of a backup: a restore to a moment from the continuous archive (backups/pitr).
    """
    try:
        with transaction.atomic():
            if Backup.objects.filter(tenant=tenant, status__in=Backup.ACTIVE_STATUSES).exists():
                raise BackupStateError(
                    f"A backup of {tenant.subdomain!r} is queued or running; restore once it has finished."
                )
            restore = Restore.objects.create(
                tenant=tenant,
                backup=backup,
                mode=mode,
                target_subdomain=target,
                new_tenant=new_tenant,
                to_time=to_time,
            )
    except IntegrityError:
        raise BackupStateError(
            f"{tenant.subdomain!r} is already being restored; wait for it to finish."
        ) from None
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORE_STARTED,
        tenant=tenant,
        target=_restore_source(restore),
        details={"mode": mode, "restore": str(restore.pk), **({"new_subdomain": target} if target else {})},
    )
    return restore


def _restore_source(restore: Restore) -> str:
    """What a restore came from, for the audit log: a backup id, or the moment restored to."""
    return f"to {restore.to_time.isoformat()}" if restore.to_time else str(restore.backup_id)


def _restore_finish(restore: Restore, *, status: str, reason: str = "") -> None:
    restore.status, restore.status_reason = status, reason[:2000]
    restore.finished_at = timezone.now()
    restore.duration_seconds = (restore.finished_at - restore.started_at).total_seconds()
    restore.save()


def _restore_succeeded(restore: Restore, *, actor: Actor, **details: str | int) -> None:
    _restore_finish(restore, status=Restore.Status.SUCCEEDED)
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORED,
        tenant=restore.tenant,
        target=_restore_source(restore),
        details={
            "mode": restore.mode,
            "restore": str(restore.pk),
            **details,
            "duration_seconds": restore.duration_seconds,
        },
    )


def _restore_failed(restore: Restore, exc: Exception, *, actor: Actor, message: str) -> NoReturn:
    """Finish a failed restore (row and audit event), then raise what the caller should see."""
    reason = error_reason(exc)
    _restore_finish(restore, status=Restore.Status.FAILED, reason=reason)
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORE_FAILED,
        tenant=restore.tenant,
        target=_restore_source(restore),
        details={"mode": restore.mode, "restore": str(restore.pk), "reason": reason[:500]},
    )
    reraise(exc, message)


def backup_restore_in_place(
    *, tenant: Tenant, backup_id: uuid.UUID | str, confirm: str, actor: Actor
) -> Restore:
    """Replace a shop's schema with a backup's, atomically: readers see old or new, never a mix.

    Checks everything first; restores the backup into a scratch database from one read of the
    object whose sha256 is checked; takes a safety backup; copies it into a side schema; in one
    transaction deletes its sessions, voids its set-password links and swaps the two schemas by
    renames; drops the old one. Any failure before the swap leaves the shop as it was.
    """
    backup = restore_in_place_check(tenant=tenant, backup_id=backup_id, confirm=confirm)
    with _verified_copy(backup, actor) as scratch:
        restore = restore_start(tenant=tenant, backup=backup, mode=Restore.Mode.IN_PLACE, actor=actor)
        return _restore_in_place_run(tenant, backup, restore, actor, scratch)


def restore_in_place_check(*, tenant: Tenant, backup_id: uuid.UUID | str, confirm: str) -> Backup:
    """Every check of an in-place restore that needs no download; raises BackupError."""
    connection.set_schema_to_public()
    backup = backup_get(backup_id)
    if backup.tenant_id != tenant.pk:
        raise BackupStateError(
            f"Backup {backup.pk} belongs to {backup.tenant_label or 'another tenant'!r}, "
            f"not {tenant.subdomain!r}; "
            f"an in-place restore takes the tenant's own backups (use --as-new to copy another shop)."
        )
    _check_restorable(backup)
    restore_in_place_tenant_check(tenant=tenant, confirm=confirm)
    return backup


def restore_in_place_tenant_check(*, tenant: Tenant, confirm: str) -> None:
    """The tenant's side of an in-place restore (from a backup or to a moment): typed confirmation, status."""
    if (confirm or "").strip() != tenant.subdomain:
        raise BackupError(
            f"Confirmation {confirm!r} does not match {tenant.subdomain!r}; nothing was restored."
        )
    if tenant.status not in BACKUPABLE_STATUSES:
        raise BackupStateError(f"Cannot restore {tenant.subdomain!r}: it is {tenant.status}.")


def _restore_in_place_run(
    tenant: Tenant, backup: Backup, restore: Restore, actor: Actor, scratch: str
) -> Restore:
    def copy_in(side: str) -> None:
        _copy_schema_in(backup, scratch, side)
        _bring_migrations_current(backup, side)

    return swap_in_place(tenant=tenant, restore=restore, actor=actor, copy_in=copy_in)


def swap_in_place(
    *, tenant: Tenant, restore: Restore, actor: Actor, copy_in: Callable[[str], None]
) -> Restore:
    """The in-place swap every tenant restore ends with: a safety backup, ``copy_in(side)`` fills a
    side schema (at the code's migrations), then one transaction voids its logins and swaps it in
    by renames. Any failure before the swap drops the side schema: the shop is unchanged."""
    side = f"_restore_{uuid.uuid4().hex[:16]}"
    old = f"_replaced_{uuid.uuid4().hex[:16]}"
    try:
        safety = runs.backup_tenant_now(tenant=tenant, actor=actor, purpose=Backup.Purpose.SAFETY)
        restore.safety_backup = safety
        restore.save(update_fields=["safety_backup"])
        copy_in(side)
        connection.set_schema_to_public()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '30s'")
            logins = _invalidate_logins(cursor, side)
            cursor.execute(
                f"ALTER SCHEMA {quote_schema_name(tenant.schema_name)} RENAME TO {quote_schema_name(old)}"
            )
            cursor.execute(
                f"ALTER SCHEMA {quote_schema_name(side)} RENAME TO {quote_schema_name(tenant.schema_name)}"
            )
    except Exception as exc:
        _drop_schema(side)
        _restore_failed(restore, exc, actor=actor, message="Restore failed, the shop is unchanged")
    _drop_schema(old)

    tenant_routes_forget(tenant)
    _restore_succeeded(restore, actor=actor, safety_backup=str(safety.pk), **logins)
    return restore


def restore_as_new_check(*, backup_id: uuid.UUID | str, subdomain: str) -> tuple[Backup, str]:
    """Every check of a restore as a new tenant that needs no download; raises BackupError."""
    connection.set_schema_to_public()
    backup = backup_get(backup_id)
    _check_restorable(backup)
    subdomain = restore_as_new_subdomain_check(subdomain=subdomain)
    source = backup.tenant
    if source is None:
        raise BackupStateError(
            f"Backup {backup.pk}'s tenant no longer exists; its plan and owner are unknown."
        )
    return backup, subdomain


def restore_as_new_subdomain_check(*, subdomain: str) -> str:
    """The new shop's subdomain for a restore as new: free (host, schema, tenant); normalised."""
    connection.set_schema_to_public()
    subdomain = subdomain_normalise(subdomain)
    existing = Tenant.objects.filter(subdomain=subdomain).first()
    # A tenant left failed by an earlier attempt may be reused (tenant_request allows it too).
    if existing is not None and existing.status not in (Tenant.Status.FAILED, Tenant.Status.PROVISIONING):
        raise BackupError(f"Subdomain {subdomain!r} is taken; pick another for --as-new.")
    if Domain.objects.filter(domain=platform_host_for(subdomain)).exists() or schema_exists(
        schema_name_for(subdomain)
    ):
        raise BackupError(f"Subdomain {subdomain!r} is in use (host or schema exists); pick another.")
    return subdomain


def backup_restore_as_new(
    *, backup_id: uuid.UUID | str, subdomain: str, actor: Actor, name: str = ""
) -> Restore:
    """Copy a tenant backup into a new tenant (schema renamed on the way in) with its own domain."""
    backup, subdomain = restore_as_new_check(backup_id=backup_id, subdomain=subdomain)
    source = backup.tenant
    assert source is not None  # restore_as_new_check refuses a backup whose tenant is gone
    with _verified_copy(backup, actor) as scratch:
        return _restore_as_new_run(backup, source, subdomain, name, actor, scratch)


def _restore_as_new_run(
    backup: Backup, source: Tenant, subdomain: str, name: str, actor: Actor, scratch: str
) -> Restore:
    def copy_in(schema: str) -> None:
        _copy_schema_in(backup, scratch, schema)
        _bring_migrations_current(backup, schema)

    return create_as_new(
        source=source, subdomain=subdomain, name=name, actor=actor, backup=backup, copy_in=copy_in
    )


def create_as_new(
    *,
    source: Tenant,
    subdomain: str,
    name: str,
    actor: Actor,
    copy_in: Callable[[str], None],
    backup: Backup | None = None,
    to_time: datetime | None = None,
) -> Restore:
    """A new shop whose schema ``copy_in(schema)`` fills (at the code's migrations), activated in the
    transaction that voids its logins; rolled back (schema dropped, tenant failed) on any error."""
    restored_from = str(backup.pk) if backup else f"{source.subdomain} at {to_time}"
    tenant = tenant_request(
        subdomain=subdomain,
        name=name or f"{source.name} (restored copy)",
        plan=source.plan,
        owner_email=source.owner_email,
        actor=actor,
    )
    restore = restore_start(
        tenant=source,
        backup=backup,
        mode=Restore.Mode.AS_NEW,
        actor=actor,
        target=subdomain,
        new_tenant=tenant,
        to_time=to_time,
    )
    try:
        copy_in(tenant.schema_name)
        connection.set_schema_to_public()
        with transaction.atomic():
            with connection.cursor() as cursor:
                logins = _invalidate_logins(cursor, tenant.schema_name)
            host = tenant_activate(tenant=tenant, actor=actor, details={"restored_from": restored_from})
    except Exception as exc:
        _drop_schema(tenant.schema_name)
        Tenant.objects.filter(pk=tenant.pk).update(
            status=Tenant.Status.FAILED, status_reason=f"restore failed: {error_reason(exc)}"[:2000]
        )
        _restore_failed(
            restore, exc, actor=actor, message=f"Restore as {subdomain!r} failed and was rolled back"
        )
    routes_forget(host)
    _restore_succeeded(restore, actor=actor, new_tenant=str(tenant.pk), new_subdomain=subdomain, **logins)
    return restore
