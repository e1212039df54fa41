"""Backups: create, run, verify, restore (in place / as new), prune, drill, export, erasure.

One set of services behind the admin, the management commands and the RQ jobs. Each validates
first (nothing is touched on bad input), writes an audit event, and raises a BackupError whose
message says what to fix.
"""

import hashlib
import io
import json
import logging
import random
import re
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import BinaryIO, NoReturn

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_exists
from psycopg import sql as psycopg_sql

from backups import (
    jobs,  # it imports this module too: used at call time
    pgtools,
)
from backups import manifest as manifest_mod
from backups.errors import BackupError, BackupIntegrityError, BackupStateError, StorageError
from backups.models import Backup, Export, Restore, RestoreDrill
from backups.storage import backup_storage
from core.audit import Action, Actor, audit_record
from core.models import AuditEvent
from tenants.migration_state import expected_migration_keys
from tenants.models import Domain, Tenant
from tenants.routing import routes_forget, tenant_routes_forget
from tenants.services import platform_host_for, tenant_activate, tenant_request
from tenants.validation import schema_name_for, subdomain_normalise

logger = logging.getLogger(__name__)

BACKUPABLE_STATUSES = (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED)
READ_CHUNK = 1024 * 1024
HEARTBEAT_SECONDS = 2.0
# Worked by backups.worker.BackupWorker, which runs jobs without forking (see that module).

Progress = Callable[[int, float], None]


# --- create and run ------------------------------------------------------------------------------


def _check_tenant_backupable(tenant: Tenant, purpose: str) -> None:
    allowed = BACKUPABLE_STATUSES + (
        (Tenant.Status.DEPROVISIONING,) if purpose == Backup.Purpose.FINAL else ()
    )
    if tenant.status not in allowed:
        raise BackupStateError(
            f"Cannot back up {tenant.subdomain!r}: it is {tenant.status} "
            f"(only {', '.join(BACKUPABLE_STATUSES)} tenants are backed up)."
        )
    if (
        purpose != Backup.Purpose.SAFETY
        and Restore.objects.filter(
            tenant=tenant, status=Restore.Status.RUNNING, mode=Restore.Mode.IN_PLACE
        ).exists()
    ):
        raise BackupStateError(f"Cannot back up {tenant.subdomain!r}: it is being restored right now.")


def backup_create(
    *,
    kind: str,
    tenant: Tenant | None = None,
    purpose: str = Backup.Purpose.MANUAL,
    actor: Actor,
    enqueue: bool = True,
) -> Backup:
    """Record a queued backup (the per-tenant lock) and, by default, enqueue its job."""
    connection.set_schema_to_public()
    if kind not in Backup.Kind.values:
        raise BackupError(f"Unknown backup kind {kind!r}; use one of {', '.join(Backup.Kind.values)}.")
    if (kind == Backup.Kind.TENANT) != (tenant is not None):
        raise BackupError("A tenant backup needs a tenant; platform and database backups take none.")
    if tenant is not None:
        tenant = Tenant.objects.get(pk=tenant.pk)
        _check_tenant_backupable(tenant, purpose)
    storage = backup_storage()
    try:
        with transaction.atomic():
            backup = Backup.objects.create(
                kind=kind,
                purpose=purpose,
                tenant=tenant,
                tenant_label=tenant.subdomain if tenant else "",
                schema_name=tenant.schema_name
                if tenant
                else ("public" if kind == Backup.Kind.PLATFORM else ""),
                storage=storage.name,
            )
            audit_record(
                actor=actor,
                action=Action.BACKUP_QUEUED,
                tenant=tenant,
                target=str(backup.pk),
                details={"kind": kind, "purpose": purpose},
            )
            if enqueue:
                jobs.backup_run_job.delay(str(backup.pk), *actor.job_args)
    except IntegrityError:
        what = repr(tenant.subdomain) if tenant else f"the {kind}"
        raise BackupStateError(
            f"A backup of {what} is already queued or running; wait for it to finish."
        ) from None
    return backup


def _object_key(backup: Backup) -> str:
    stamp = backup.created_at.strftime("%Y%m%dT%H%M%SZ")
    if backup.kind == Backup.Kind.TENANT:
        return f"tenants/{backup.tenant_id}/{stamp}-{backup.pk}.dump"
    return f"{backup.kind}/{stamp}-{backup.pk}.dump"


def manifest_key(backup: Backup) -> str:
    return manifest_key_for(backup.location)


def manifest_key_for(location: str) -> str:
    return location + ".manifest.json"


def _reason(exc: BaseException) -> str:
    """An error as a person reads it: our own messages as they are, anything else with its type."""
    return str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"


def _reraise(exc: Exception, message: str) -> NoReturn:
    """Raise a BackupError as it is; wrap anything else in one that starts with ``message``."""
    if isinstance(exc, BackupError):
        raise exc
    raise BackupError(f"{message}: {_reason(exc)}") from exc


def _fail(row: Backup | Export, reason: str, actor: Actor) -> None:
    """Mark a backup or an export failed with the reason, and audit it."""
    model = type(row)
    model.objects.filter(pk=row.pk).update(
        status=model.Status.FAILED, status_reason=reason[:2000], finished_at=timezone.now()
    )
    row.refresh_from_db()
    audit_record(
        actor=actor,
        action=Action.BACKUP_FAILED if model is Backup else Action.EXPORT_FAILED,
        tenant=row.tenant,
        target=str(row.pk),
        details={"reason": reason[:500]},
    )


def backup_run(*, backup_id, actor: Actor, progress: Progress | None = None) -> Backup:
    """Dump, stream to storage, verify. Idempotent: a finished backup is returned as it is."""
    connection.set_schema_to_public()
    refused = None
    with transaction.atomic():
        backup = Backup.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=backup_id)
        if backup.status != Backup.Status.QUEUED:
            if backup.status in (Backup.Status.VERIFIED, Backup.Status.UPLOADED, Backup.Status.FAILED):
                return backup
            raise BackupStateError(f"Backup {backup.pk} is already running.")
        try:
            if backup.tenant is not None:
                _check_tenant_backupable(backup.tenant, backup.purpose)
            pgtools.pg_binary("pg_dump")
        except BackupError as exc:
            refused = exc
        else:
            now = timezone.now()
            backup.status, backup.started_at, backup.heartbeat_at = Backup.Status.RUNNING, now, now
            backup.location = _object_key(backup)
            backup.save()
    if refused is not None:
        _fail(backup, str(refused), actor)
        raise refused
    try:
        _dump_and_upload(backup, progress)
    except BaseException as exc:
        # BaseException too: a worker's cold shutdown (SystemExit) is recorded at once, not by the reaper.
        if not isinstance(exc, Exception):
            _fail(backup, f"Interrupted ({type(exc).__name__}); the partial upload was discarded.", actor)
            raise
        _fail(backup, _reason(exc), actor)
        _reraise(exc, f"Backup {backup.pk} failed")
    audit_record(
        actor=actor,
        action=Action.BACKUP_UPLOADED,
        tenant=backup.tenant,
        target=str(backup.pk),
        details={"size": backup.size_bytes, "sha256": backup.sha256, "location": backup.location},
    )
    return backup_verify(backup=backup, actor=actor)


def _dump_and_upload(backup: Backup, progress: Progress | None) -> None:
    storage = backup_storage()
    started = time.monotonic()
    schemas = {Backup.Kind.TENANT: [backup.schema_name], Backup.Kind.PLATFORM: ["public"]}.get(backup.kind)
    digest, size = hashlib.sha256(), 0
    # The manifest is read in the very snapshot pg_dump dumps, so its row counts are exact.
    with pgtools.connect() as snap_conn:
        snap_conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot, found = snap_conn.execute(
            "SELECT pg_export_snapshot(), %s::text IS NULL OR EXISTS "
            "(SELECT 1 FROM pg_namespace WHERE nspname = %s::text)",
            [schemas[0] if schemas else None] * 2,
        ).fetchone()
        if not found:
            raise BackupStateError(f"Schema {schemas[0]!r} does not exist; nothing to back up.")
        if backup.kind == Backup.Kind.TENANT:
            options = pgtools.schema_dump_options(snap_conn, schemas[0])
        else:
            options = []
        cmd, env = pgtools.dump_command(
            schema=schemas[0] if schemas else None, snapshot=snapshot, options=options
        )
        writer = storage.writer(backup.location)
        Backup.objects.filter(pk=backup.pk).update(pending_upload_id=writer.upload_id)
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errors, bufsize=0)
            try:
                contents = manifest_mod.read_contents_in_snapshot(
                    snap_conn, snapshot, schemas, pgtools.connect
                )
                last_beat = time.monotonic()
                while chunk := proc.stdout.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    writer.write(chunk)
                    if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                        last_beat = time.monotonic()
                        Backup.objects.filter(pk=backup.pk).update(
                            heartbeat_at=timezone.now(), size_bytes=size
                        )
                        if progress:
                            progress(size, last_beat - started)
                if proc.wait() != 0:
                    errors.seek(0)
                    raise BackupError(f"pg_dump failed: {pgtools.stderr_tail(errors.read())}")
                writer.commit()
            except BaseException:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                _abort(backup, storage, writer)
                raise
        server_version = snap_conn.info.parameter_status("server_version")
        snap_conn.rollback()
    finished = timezone.now()
    backup.size_bytes, backup.sha256 = size, digest.hexdigest()
    backup.finished_at, backup.duration_seconds = finished, time.monotonic() - started
    backup.manifest = {
        "format": 1,
        "backup_id": str(backup.pk),
        "kind": backup.kind,
        "tenant": {"id": str(backup.tenant_id), "subdomain": backup.tenant_label}
        if backup.tenant_id
        else None,
        "schema": backup.schema_name or None,
        "database": pgtools.database_params()["dbname"],
        "server_version": server_version,
        "pg_dump_major": pgtools.server_major(),
        "pg_dump_options": options,
        "tables": contents["tables"],
        "migrations": contents["migrations"],
        "sha256": backup.sha256,
        "size_bytes": size,
        "started_at": backup.started_at.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_seconds": round(backup.duration_seconds, 3),
        "storage": storage.name,
        "location": backup.location,
    }
    try:
        storage.put_bytes(manifest_key(backup), json.dumps(backup.manifest, indent=2).encode())
    except StorageError:
        _delete_quietly(storage, backup.location)
        raise
    backup.status, backup.pending_upload_id = Backup.Status.UPLOADED, ""
    fields = [
        "status",
        "pending_upload_id",
        "size_bytes",
        "sha256",
        "finished_at",
        "duration_seconds",
        "manifest",
    ]
    # Only if still running: the reaper may have declared this run dead (no progress for too long).
    if not Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
        **{f: getattr(backup, f) for f in fields}
    ):
        _delete_quietly(storage, backup.location)
        _delete_quietly(storage, manifest_key(backup))
        raise BackupStateError(f"Backup {backup.pk} was declared dead while it ran; its object was removed.")
    if progress:
        progress(size, backup.duration_seconds)


def _delete_quietly(storage, key: str) -> None:
    try:
        storage.delete(key)
    except StorageError as exc:
        logger.warning("Could not delete %s after a failed backup: %s", key, exc)


def _abort(row: Backup | Export, storage, writer) -> None:
    """Abort the upload; if the store cannot be reached, leave the upload id for the reaper."""
    try:
        writer.abort()
    except StorageError as exc:
        logger.warning("Could not abort the upload of %s yet: %s", row, exc)
        return
    type(row).objects.filter(pk=row.pk).update(pending_upload_id="")


def _digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _stored_digest(backup: Backup) -> tuple[str, int]:
    return _digest(backup_storage().read_chunks(backup.location))


def _check_storage(backup: Backup) -> None:
    configured = backup_storage().name
    if backup.storage != configured:
        raise BackupStateError(
            f"Backup {backup.pk} is stored in {backup.storage!r} but BACKUP_STORAGE is {configured!r}; "
            "point the settings at that store first."
        )


def backup_verify(*, backup: Backup, actor: Actor) -> Backup:
    """Read the stored object back and compare size and sha256 with the manifest."""
    _check_storage(backup)
    if backup.status not in (Backup.Status.UPLOADED, Backup.Status.VERIFIED):
        raise BackupStateError(
            f"Backup {backup.pk} is {backup.status}; only uploaded backups can be verified."
        )
    sha, size = _stored_digest(backup)
    if (sha, size) != (backup.sha256, backup.size_bytes):
        reason = (
            f"Stored object does not match its manifest: sha256 {sha[:12]}... size {size}, "
            f"expected {backup.sha256[:12]}... size {backup.size_bytes}. It is corrupt; do not restore it."
        )
        _fail(backup, reason, actor)
        raise BackupIntegrityError(reason)
    if backup.status != Backup.Status.VERIFIED:
        Backup.objects.filter(pk=backup.pk).update(status=Backup.Status.VERIFIED)
        backup.status = Backup.Status.VERIFIED
        audit_record(
            actor=actor,
            action=Action.BACKUP_VERIFIED,
            tenant=backup.tenant,
            target=str(backup.pk),
            details={"sha256": sha},
        )
    return backup


def backup_tenant_now(
    *, tenant: Tenant, actor: Actor, purpose: str = Backup.Purpose.MANUAL, progress: Progress | None = None
) -> Backup:
    """Create and run a tenant backup in this process (commands, safety and final backups)."""
    backup = backup_create(
        kind=Backup.Kind.TENANT, tenant=tenant, purpose=purpose, actor=actor, enqueue=False
    )
    return backup_run(backup_id=backup.pk, actor=actor, progress=progress)


def backup_reap(*, actor: Actor) -> int:
    """Fail backups and exports whose worker died (no heartbeat); abort uploads left unfinished."""
    connection.set_schema_to_public()
    cutoff = timezone.now() - timedelta(seconds=settings.BACKUP_STALE_AFTER_SECONDS)
    reaped = 0
    for backup in Backup.objects.filter(status=Backup.Status.RUNNING, heartbeat_at__lt=cutoff):
        _fail(backup, "The worker stopped mid-backup (no progress); the partial upload was discarded.", actor)
        reaped += 1
    for export in Export.objects.filter(status=Export.Status.RUNNING, heartbeat_at__lt=cutoff):
        reason = "The worker stopped mid-export (no progress); the partial archive was discarded."
        _fail(export, reason, actor)
        reaped += 1
    storage = backup_storage()
    for model in (Backup, Export):
        unfinished = model.objects.filter(status=model.Status.FAILED, storage=storage.name)
        for row in unfinished.exclude(pending_upload_id="").exclude(location=""):
            try:
                storage.abort_pending(row.location, row.pending_upload_id)
            except StorageError as exc:
                logger.warning("Upload of %s still cannot be aborted: %s", row, exc)
                continue
            model.objects.filter(pk=row.pk).update(pending_upload_id="")
    return reaped


# --- restore -------------------------------------------------------------------------------------


def backup_get(backup_id) -> Backup:
    try:
        uuid.UUID(str(backup_id))
    except ValueError:
        raise BackupError(
            f"{backup_id!r} is not a backup id (ids look like 3f2c...; see list_backups)."
        ) from None
    backup = Backup.objects.select_related("tenant").filter(pk=backup_id).first()
    if backup is None:
        raise BackupError(f"No backup with id {backup_id} (see list_backups).")
    return backup


def _check_restorable(backup: Backup) -> None:
    if backup.kind != Backup.Kind.TENANT:
        raise BackupStateError(
            f"Backup {backup.pk} is a {backup.kind} backup; restore_tenant takes tenant backups "
            "(restore_database restores database and platform backups into a new database)."
        )
    _check_verified_and_here(backup)


def _check_verified_and_here(backup: Backup) -> None:
    if backup.status not in Backup.RESTORABLE_STATUSES:
        detail = f": {backup.status_reason}" if backup.status_reason else ""
        raise BackupStateError(
            f"Backup {backup.pk} is {backup.status}{detail}; only verified backups can be restored."
        )
    _check_storage(backup)


def _verify_before_restore(backup: Backup, actor: Actor) -> None:
    sha, size = _stored_digest(backup)
    if (sha, size) != (backup.sha256, backup.size_bytes):
        reason = (
            f"Checksum mismatch: the stored object has sha256 {sha[:12]}... ({size} bytes) but the manifest "
            f"says {backup.sha256[:12]}... ({backup.size_bytes} bytes). "
            "Nothing was restored; pick another backup."
        )
        _fail(backup, reason, actor)
        raise BackupIntegrityError(reason)


def _pipe_into_restore(chunks: Iterable[bytes], *, dbname: str, single_transaction: bool = True) -> None:
    cmd, env = pgtools.restore_command(dbname=dbname, single_transaction=single_transaction)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            errors.seek(0)
            raise BackupError(f"pg_restore failed: {pgtools.stderr_tail(errors.read())}")


def restore_into_scratch(backup: Backup, scratch_db: str) -> None:
    """Restore a backup object as it is into a scratch database (drills and schema copies)."""
    _pipe_into_restore(backup_storage().read_chunks(backup.location), dbname=scratch_db)


def _copy_schema_in(backup: Backup, target_schema: str) -> None:
    """Create ``target_schema`` in our database from a tenant backup of another schema name.

    pg_restore cannot rename a schema, so: restore into a scratch database, rename there, dump the
    renamed schema and pipe it into our database in one transaction (all or nothing).
    """
    source = backup.manifest.get("schema") or backup.schema_name
    with pgtools.scratch_database() as scratch:
        restore_into_scratch(backup, scratch)
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
            dump.stdout.close()
            restore_rc, dump_rc = restore.wait(), dump.wait()
            if dump_rc != 0:
                dump_err.seek(0)
                raise BackupError(
                    f"pg_dump of the scratch copy failed: {pgtools.stderr_tail(dump_err.read())}"
                )
            if restore_rc != 0:
                restore_err.seek(0)
                raise BackupError(f"pg_restore failed: {pgtools.stderr_tail(restore_err.read())}")


def _bring_migrations_current(backup: Backup, schema_name: str) -> None:
    applied = set(next(iter(backup.manifest.get("migrations", {}).values()), {}).get("applied", []))
    unknown = sorted(applied - set(expected_migration_keys()))
    if unknown:
        raise BackupStateError(
            f"Backup {backup.pk} was taken by a newer release "
            f"(unknown migrations: {', '.join(unknown[:5])}); "
            "deploy that release before restoring it."
        )
    if applied != set(expected_migration_keys()):
        from django.core.management import call_command

        try:
            call_command("migrate_schemas", schema_name=schema_name, interactive=False, verbosity=0)
        finally:
            connection.set_schema_to_public()


def _drop_schema(name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(name)} CASCADE")


def _restore_start(
    *,
    tenant: Tenant,
    backup: Backup,
    mode: str,
    actor: Actor,
    target: str = "",
    new_tenant: Tenant | None = None,
) -> Restore:
    """The Restore row (the per-tenant restore lock) and its audit event."""
    try:
        with transaction.atomic():
            if Backup.objects.filter(tenant=tenant, status__in=Backup.ACTIVE_STATUSES).exists():
                raise BackupStateError(
                    f"A backup of {tenant.subdomain!r} is queued or running; restore once it has finished."
                )
            restore = Restore.objects.create(
                tenant=tenant, backup=backup, mode=mode, target_subdomain=target, new_tenant=new_tenant
            )
    except IntegrityError:
        raise BackupStateError(
            f"{tenant.subdomain!r} is already being restored; wait for it to finish."
        ) from None
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORE_STARTED,
        tenant=tenant,
        target=str(backup.pk),
        details={"mode": mode, "restore": str(restore.pk), **({"new_subdomain": target} if target else {})},
    )
    return restore


def _restore_finish(restore: Restore, *, status: str, reason: str = "") -> None:
    restore.status, restore.status_reason = status, reason[:2000]
    restore.finished_at = timezone.now()
    restore.duration_seconds = (restore.finished_at - restore.started_at).total_seconds()
    restore.save()


def _restore_succeeded(restore: Restore, *, actor: Actor, **details: str) -> None:
    _restore_finish(restore, status=Restore.Status.SUCCEEDED)
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORED,
        tenant=restore.tenant,
        target=str(restore.backup_id),
        details={
            "mode": restore.mode,
            "restore": str(restore.pk),
            **details,
            "duration_seconds": restore.duration_seconds,
        },
    )


def _restore_failed(restore: Restore, exc: Exception, *, actor: Actor, message: str) -> NoReturn:
    """Finish a failed restore (row and audit event), then raise what the caller should see."""
    reason = _reason(exc)
    _restore_finish(restore, status=Restore.Status.FAILED, reason=reason)
    audit_record(
        actor=actor,
        action=Action.BACKUP_RESTORE_FAILED,
        tenant=restore.tenant,
        target=str(restore.backup_id),
        details={"mode": restore.mode, "reason": reason[:500]},
    )
    _reraise(exc, message)


def backup_restore_in_place(*, tenant: Tenant, backup_id, confirm: str, actor: Actor) -> Restore:
    """Replace a shop's schema with a backup's, atomically: readers see old or new, never a mix.

    Checks everything first; takes a safety backup; restores into a side schema; swaps the two by
    renames in one transaction; drops the old one. Any failure before the swap leaves the shop as it was.
    """
    backup = restore_in_place_check(tenant=tenant, backup_id=backup_id, confirm=confirm)
    _verify_before_restore(backup, actor)

    restore = _restore_start(tenant=tenant, backup=backup, mode=Restore.Mode.IN_PLACE, actor=actor)
    return _restore_in_place_run(tenant, backup, restore, actor)


def restore_in_place_check(*, tenant: Tenant, backup_id, confirm: str) -> Backup:
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
    if (confirm or "").strip() != tenant.subdomain:
        raise BackupError(
            f"Confirmation {confirm!r} does not match {tenant.subdomain!r}; nothing was restored."
        )
    if tenant.status not in BACKUPABLE_STATUSES:
        raise BackupStateError(f"Cannot restore {tenant.subdomain!r}: it is {tenant.status}.")
    return backup


def _restore_in_place_run(tenant: Tenant, backup: Backup, restore: Restore, actor: Actor) -> Restore:
    side = f"_restore_{uuid.uuid4().hex[:16]}"
    old = f"_replaced_{uuid.uuid4().hex[:16]}"
    try:
        safety = backup_tenant_now(tenant=tenant, actor=actor, purpose=Backup.Purpose.SAFETY)
        restore.safety_backup = safety
        restore.save(update_fields=["safety_backup"])
        _copy_schema_in(backup, side)
        _bring_migrations_current(backup, side)
        connection.set_schema_to_public()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '30s'")
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
    _restore_succeeded(restore, actor=actor, safety_backup=str(safety.pk))
    return restore


def restore_as_new_check(*, backup_id, subdomain: str) -> tuple[Backup, str]:
    """Every check of a restore as a new tenant that needs no download; raises BackupError."""
    connection.set_schema_to_public()
    backup = backup_get(backup_id)
    _check_restorable(backup)
    subdomain = subdomain_normalise(subdomain)
    existing = Tenant.objects.filter(subdomain=subdomain).first()
    # A tenant left failed by an earlier attempt may be reused (tenant_request allows it too).
    if existing is not None and existing.status not in (Tenant.Status.FAILED, Tenant.Status.PROVISIONING):
        raise BackupError(f"Subdomain {subdomain!r} is taken; pick another for --as-new.")
    if Domain.objects.filter(domain=platform_host_for(subdomain)).exists() or schema_exists(
        schema_name_for(subdomain)
    ):
        raise BackupError(f"Subdomain {subdomain!r} is in use (host or schema exists); pick another.")
    source = backup.tenant
    if source is None:
        raise BackupStateError(
            f"Backup {backup.pk}'s tenant no longer exists; its plan and owner are unknown."
        )
    return backup, subdomain


def backup_restore_as_new(*, backup_id, subdomain: str, actor: Actor, name: str = "") -> Restore:
    """Copy a tenant backup into a new tenant (schema renamed on the way in) with its own domain."""
    backup, subdomain = restore_as_new_check(backup_id=backup_id, subdomain=subdomain)
    source = backup.tenant
    _verify_before_restore(backup, actor)

    tenant = tenant_request(
        subdomain=subdomain,
        name=name or f"{source.name} (restored copy)",
        plan=source.plan,
        owner_email=source.owner_email,
        actor=actor,
    )
    restore = _restore_start(
        tenant=source,
        backup=backup,
        mode=Restore.Mode.AS_NEW,
        actor=actor,
        target=subdomain,
        new_tenant=tenant,
    )
    try:
        _copy_schema_in(backup, tenant.schema_name)
        _bring_migrations_current(backup, tenant.schema_name)
        connection.set_schema_to_public()
        with transaction.atomic():
            host = tenant_activate(tenant=tenant, actor=actor, details={"restored_from": str(backup.pk)})
    except Exception as exc:
        _drop_schema(tenant.schema_name)
        Tenant.objects.filter(pk=tenant.pk).update(
            status=Tenant.Status.FAILED, status_reason=f"restore failed: {_reason(exc)}"[:2000]
        )
        _restore_failed(
            restore, exc, actor=actor, message=f"Restore as {subdomain!r} failed and was rolled back"
        )
    routes_forget(host)
    _restore_succeeded(restore, actor=actor, new_tenant=str(tenant.pk), new_subdomain=subdomain)
    return restore


# --- whole-database restore ----------------------------------------------------------------------

DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SERVER_DATABASES = ("postgres", "template0", "template1")
# Anything in a database beyond what CREATE DATABASE gives: then it is not "empty".
DATABASE_HOLDS_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_namespace
               WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public'))
    OR EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = 'public'::regnamespace)
    OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
    OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = 'public'::regnamespace)
"""
PhaseProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DatabaseSource:
    """A database or platform backup to restore: from this database's records, or from the store alone."""

    backup_id: str
    kind: str
    location: str
    sha256: str
    size_bytes: int
    manifest: dict
    backup: Backup | None = None


def _check_database_kind(kind, label: str) -> None:
    if kind not in (Backup.Kind.DATABASE, Backup.Kind.PLATFORM):
        raise BackupStateError(
            f"{label} is a {kind} backup; restore_database takes database and platform backups "
            "(restore_tenant restores a tenant)."
        )


def database_source(*, backup_id=None, object_key: str | None = None) -> DatabaseSource:
    """The backup to restore, by id (this database's records) or by its key in the store.

    The key serves when the database that held the records is the one that was lost: the
    manifest stored next to the object says what it is and what its checksum must be.
    """
    if (backup_id is None) == (object_key is None):
        raise BackupError("Name the backup by --backup ID (see list_backups) or by --object KEY, not both.")
    if backup_id is not None:
        connection.set_schema_to_public()
        backup = backup_get(backup_id)
        _check_database_kind(backup.kind, f"Backup {backup.pk}")
        _check_verified_and_here(backup)
        return DatabaseSource(
            backup_id=str(backup.pk),
            kind=backup.kind,
            location=backup.location,
            sha256=backup.sha256,
            size_bytes=backup.size_bytes,
            manifest=backup.manifest,
            backup=backup,
        )
    storage = backup_storage()
    key = object_key.strip().removesuffix(".manifest.json")
    try:
        manifest = json.loads(storage.get_bytes(manifest_key_for(key)))
    except StorageError as exc:
        raise BackupError(
            f"No manifest next to {key!r} ({exc}) Give the key of a .dump object in {storage.describe()}."
        ) from None
    except ValueError:
        raise BackupIntegrityError(f"The manifest of {key!r} is not valid JSON; it is damaged.") from None
    missing = [f for f in ("backup_id", "kind", "sha256", "size_bytes") if f not in manifest]
    if missing:
        raise BackupIntegrityError(f"The manifest of {key!r} lacks {', '.join(missing)}; it is damaged.")
    _check_database_kind(manifest["kind"], key)
    return DatabaseSource(
        backup_id=str(manifest["backup_id"]),
        kind=manifest["kind"],
        location=key,
        sha256=manifest["sha256"],
        size_bytes=int(manifest["size_bytes"]),
        manifest=manifest,
    )


def _database_holds_data(name: str) -> bool:
    with pgtools.connect(name) as conn:
        return conn.execute(DATABASE_HOLDS_SQL).fetchone()[0]


def database_restore_check(*, target: str) -> bool:
    """Refuse a bad target before anything is read or created. True if it exists (it is then empty)."""
    if not DATABASE_NAME.fullmatch(target or ""):
        raise BackupError(
            f"{target!r} is not a database name restore_database creates: lower-case letters, digits "
            "and _, at most 63, not starting with a digit."
        )
    if target in {pgtools.database_params()["dbname"], connection.settings_dict["NAME"]}:
        raise BackupError(
            f"{target!r} is the live database; restore_database never writes over it. Restore into a "
            "new database, check it, then point DATABASE_URL at it."
        )
    if target in SERVER_DATABASES:
        raise BackupError(f"{target!r} is one of the server's own databases; pick another name.")
    with pgtools.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target]).fetchone()
    if exists and _database_holds_data(target):
        raise BackupError(
            f"Database {target!r} already exists and holds data; restore_database fills only a new or "
            "empty database. Pick another name."
        )
    return bool(exists)


def _counted(
    chunks: Iterable[bytes], phase: str, total: int, progress: PhaseProgress | None
) -> Iterator[bytes]:
    """Pass chunks through, reporting bytes done at most once a second and at the end."""
    done, last = 0, time.monotonic()
    if progress:
        progress(phase, 0, total)
    for chunk in chunks:
        done += len(chunk)
        if progress and time.monotonic() - last >= 1.0:
            last = time.monotonic()
            progress(phase, done, total)
        yield chunk
    if progress:
        progress(phase, done, total)


def database_restore(
    *, source: DatabaseSource, target: str, actor: Actor, progress: PhaseProgress | None = None
) -> dict:
    """Restore a database or platform backup into the new database ``target``, never the live one.

    The checksum is verified first. The dump goes into a private working database, is checked
    against its manifest (row counts of every table, migration state) and only then renamed to
    ``target``: a failure at any step drops the working database, so no half-restored one is left.
    """
    replaces_empty = database_restore_check(target=target)
    major, taken = pgtools.server_major(), int(source.manifest.get("pg_dump_major") or 0)
    if taken > major:
        raise BackupStateError(
            f"Backup {source.backup_id} was taken from PostgreSQL {taken}; this server is {major}. "
            f"Restore it onto a PostgreSQL {taken} (or newer) server."
        )
    started = time.monotonic()
    storage = backup_storage()
    sha, size = _digest(_counted(storage.read_chunks(source.location), "verify", source.size_bytes, progress))
    if (sha, size) != (source.sha256, source.size_bytes):
        reason = (
            f"Checksum mismatch: the stored object has sha256 {sha[:12]}... ({size} bytes) but the manifest "
            f"says {source.sha256[:12]}... ({source.size_bytes} bytes). Nothing was restored."
        )
        if source.backup is not None:
            _fail(source.backup, reason, actor)
        raise BackupIntegrityError(reason)

    work = f"{target[:40]}_restoring_{uuid.uuid4().hex[:10]}"
    platform_only = source.kind == Backup.Kind.PLATFORM
    try:
        pgtools.database_create(work, without_public=platform_only)
        # One transaction for the public schema alone; a whole database of thousands of tenant
        # tables would run out of lock slots in one, hence the working database.
        _pipe_into_restore(
            _counted(storage.read_chunks(source.location), "restore", size, progress),
            dbname=work,
            single_transaction=platform_only,
        )
        expected = source.manifest.get("tables", {})
        if progress:
            progress("check", 0, len(expected))
        found = manifest_mod.read_contents_batched(lambda: pgtools.connect(work), list(expected))
        problems = manifest_mod.compare_counts(expected, found["tables"])
        fingerprints = {s: m["fingerprint"] for s, m in source.manifest.get("migrations", {}).items()}
        if fingerprints != {s: m["fingerprint"] for s, m in found["migrations"].items()}:
            problems.append("the applied migrations differ from the manifest's")
        if problems:
            raise BackupIntegrityError(
                "The restored database does not match the manifest: " + "; ".join(problems[:10])
            )
        summary = {
            "backup": source.backup_id,
            "kind": source.kind,
            "target": target,
            "schemas": len(expected),
            "tables": sum(len(t) for t in expected.values()),
            "rows": sum(sum(t.values()) for t in expected.values()),
            "size_bytes": size,
        }
        _record_in_restored(work, source, actor, summary)
        with pgtools.connect(autocommit=True) as conn:
            if replaces_empty:
                if _database_holds_data(target):
                    raise BackupStateError(f"Database {target!r} received data meanwhile; it was left alone.")
                conn.execute(psycopg_sql.SQL("DROP DATABASE {}").format(psycopg_sql.Identifier(target)))
            conn.execute(
                psycopg_sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    psycopg_sql.Identifier(work), psycopg_sql.Identifier(target)
                )
            )
    except BaseException as exc:
        pgtools.database_drop(work)
        _audit_here(
            actor,
            Action.DATABASE_RESTORE_FAILED,
            source,
            {"target": target, "reason": _reason(exc)[:500]},
        )
        if not isinstance(exc, Exception):
            raise
        _reraise(exc, f"Restore into {target!r} failed and nothing was left behind")
    summary["seconds"] = round(time.monotonic() - started, 2)
    _audit_here(actor, Action.DATABASE_RESTORED, source, summary)
    return summary


def _audit_here(actor: Actor, action: str, source: DatabaseSource, details: dict) -> None:
    """Audit in the database we run against, when it is a control plane's (it may be a bare server)."""
    connection.set_schema_to_public()

    if AuditEvent._meta.db_table in connection.introspection.table_names():
        audit_record(
            actor=actor,
            action=action,
            target=source.backup_id,
            details={"kind": source.kind, "location": source.location, **details},
        )


def _record_in_restored(dbname: str, source: DatabaseSource, actor: Actor, summary: dict) -> None:
    """Tell the restored control plane what happened to it.

    The dump was taken while this very backup ran, so its row there says "running": the reaper
    would fail it. It is set to what the manifest records, and the restore is audited there too.
    """
    from psycopg.types.json import Jsonb


    backups_table, audit_table = Backup._meta.db_table, AuditEvent._meta.db_table
    m = source.manifest
    with pgtools.connect(dbname) as conn:
        conn.execute(
            psycopg_sql.SQL(
                "UPDATE public.{} SET status = %s, status_reason = '', pending_upload_id = '', "
                "size_bytes = %s, sha256 = %s, manifest = %s, finished_at = %s, duration_seconds = %s "
                "WHERE id = %s AND status IN ('queued', 'running')"
            ).format(psycopg_sql.Identifier(backups_table)),
            [
                Backup.Status.VERIFIED.value,
                source.size_bytes,
                source.sha256,
                Jsonb(m),
                m.get("finished_at"),
                m.get("duration_seconds"),
                source.backup_id,
            ],
        )
        conn.execute(
            psycopg_sql.SQL(
                "INSERT INTO public.{} (created_at, actor_type, actor, action, tenant_label, target, "
                "details) VALUES (now(), %s, %s, 'backup.database_restored', '', %s, %s)"
            ).format(psycopg_sql.Identifier(audit_table)),
            [actor.type, actor.name[:200], source.backup_id, Jsonb(summary)],
        )


# --- retention -----------------------------------------------------------------------------------


@dataclass
class PrunePlan:
    keep: list[Backup]
    delete: list[tuple[Backup, str]]
    exports: list[tuple[Export, str]] = field(default_factory=list)


def _buckets(when: datetime) -> dict[str, str]:
    year, week, _ = when.isocalendar()
    return {
        "hourly": when.strftime("%Y%m%d%H"),
        "daily": when.strftime("%Y%m%d"),
        "weekly": f"{year}W{week:02d}",
        "monthly": when.strftime("%Y%m"),
    }


def retention_keep(backups: list[Backup], policy: dict[str, int]) -> set:
    """Ids to keep: the newest backup of each of the last N hours/days/weeks/months that have one.

    ``backups`` are the finished backups of one tenant (or kind), newest first. The newest is
    always kept, whatever the policy.
    """
    keep = {backups[0].pk} if backups else set()
    for period, count in policy.items():
        seen: set[str] = set()
        for backup in backups:
            if len(seen) >= count:
                break
            bucket = _buckets(backup.created_at)[period]
            if bucket not in seen:
                seen.add(bucket)
                keep.add(backup.pk)
    return keep


def retention_policy(tenant: Tenant | None) -> dict[str, int]:
    if tenant is None:
        daily, hourly = settings.BACKUP_KEEP_PLATFORM_DAILY, 0
    else:
        daily = tenant.plan.backup_retention_days
        hourly = settings.BACKUP_KEEP_HOURLY if tenant.plan.backup_frequency == "hourly" else 0
    return {
        "hourly": hourly,
        "daily": daily,
        "weekly": settings.BACKUP_KEEP_WEEKLY,
        "monthly": settings.BACKUP_KEEP_MONTHLY,
    }


def prune_plan(*, now: datetime | None = None) -> PrunePlan:
    now = now or timezone.now()
    plan = PrunePlan(keep=[], delete=[])
    finished = (Backup.Status.VERIFIED, Backup.Status.UPLOADED)
    expired = Backup.objects.filter(expires_at__lte=now).exclude(status__in=Backup.ACTIVE_STATUSES)
    plan.delete += [(b, "erased: tenant deprovisioned and its retention ended") for b in expired]
    gone = {b.pk for b, _ in plan.delete}
    stale_failed = Backup.objects.filter(status=Backup.Status.FAILED, created_at__lt=now - timedelta(days=7))
    plan.delete += [(b, "failed more than 7 days ago") for b in stale_failed.exclude(pk__in=gone)]
    groups: dict[tuple, list[Backup]] = {}
    candidates = (
        Backup.objects.filter(status__in=finished, expires_at__isnull=True)
        .select_related("tenant__plan")
        .order_by("-created_at")
    )
    for backup in candidates:
        if backup.tenant is not None and backup.tenant.status == Tenant.Status.DELETED:
            continue  # kept until their erasure date
        groups.setdefault((backup.kind, backup.tenant_id), []).append(backup)
    for (_, _), backups in groups.items():
        keep = retention_keep(backups, retention_policy(backups[0].tenant))
        for backup in backups:
            if backup.pk in keep:
                plan.keep.append(backup)
            else:
                plan.delete.append((backup, "beyond retention"))
    # Exports: a copy of a shop's data, kept only until it expires; failed ones hold no object.
    expired_exports = Export.objects.filter(status=Export.Status.READY, expires_at__lte=now)
    plan.exports += [(e, "expired") for e in expired_exports]
    old_failed = Export.objects.filter(status=Export.Status.FAILED, created_at__lt=now - timedelta(days=7))
    plan.exports += [(e, "failed more than 7 days ago") for e in old_failed]
    return plan


def backup_delete(*, backup: Backup, reason: str, actor: Actor) -> None:
    storage = backup_storage()
    if backup.location and backup.storage == storage.name:
        storage.delete(backup.location)
        storage.delete(manifest_key(backup))
    action = Action.BACKUP_ERASED if backup.expires_at else Action.BACKUP_PRUNED
    audit_record(
        actor=actor,
        action=action,
        tenant=backup.tenant,
        target=str(backup.pk),
        details={
            "reason": reason,
            "tenant": backup.tenant_label,
            "location": backup.location,
            "created_at": backup.created_at.isoformat(),
        },
    )
    backup.delete()


def backup_prune(*, dry_run: bool, actor: Actor, now: datetime | None = None) -> PrunePlan:
    connection.set_schema_to_public()
    plan = prune_plan(now=now)
    if not dry_run:
        for backup, reason in plan.delete:
            backup_delete(backup=backup, reason=reason, actor=actor)
        for export, reason in plan.exports:
            export_delete(export=export, reason=reason, actor=actor)
    return plan


# --- restore drills ------------------------------------------------------------------------------


def drill_candidates(*, sample: int) -> list[Backup]:
    """The newest verified backup of each live tenant (and the platform), sampled at random."""
    latest: dict[tuple, Backup] = {}
    for backup in (
        Backup.objects.filter(
            status=Backup.Status.VERIFIED, kind__in=(Backup.Kind.TENANT, Backup.Kind.PLATFORM)
        )
        .select_related("tenant")
        .order_by("-created_at")
    ):
        latest.setdefault((backup.kind, backup.tenant_id), backup)
    chosen = list(latest.values())
    random.shuffle(chosen)
    return chosen[:sample]


def drill_run(*, backup: Backup, actor: Actor) -> RestoreDrill:
    """Restore one backup into a scratch database and check it against its manifest."""
    connection.set_schema_to_public()
    drill = RestoreDrill.objects.create(backup=backup, backup_label=str(backup))
    checks: list[dict] = []
    started = time.monotonic()
    try:
        _check_storage(backup)
        sha, size = _stored_digest(backup)
        ok = (sha, size) == (backup.sha256, backup.size_bytes)
        checks.append(
            {
                "check": "sha256",
                "ok": ok,
                "detail": f"stored {sha[:16]} ({size} B), "
                f"manifest {backup.sha256[:16]} ({backup.size_bytes} B)",
            }
        )
        if not ok:
            _fail(backup, "Restore drill: stored object does not match its checksum; it is corrupt.", actor)
        else:
            schemas = list(backup.manifest.get("tables", {}))
            with pgtools.scratch_database(
                "drill", without_public=backup.kind == Backup.Kind.PLATFORM
            ) as scratch:
                restore_into_scratch(backup, scratch)
                drill.rto_seconds = time.monotonic() - started
                checks.append(
                    {
                        "check": "restore",
                        "ok": True,
                        "detail": f"pg_restore into {scratch} in {drill.rto_seconds:.2f} s",
                    }
                )
                with pgtools.connect(scratch) as conn:
                    found = manifest_mod.read_contents(conn, schemas)
            problems = manifest_mod.compare_counts(backup.manifest.get("tables", {}), found["tables"])
            total = sum(sum(t.values()) for t in found["tables"].values())
            checks.append(
                {
                    "check": "row counts",
                    "ok": not problems,
                    "detail": "; ".join(problems[:10]) or f"{total} rows in {len(schemas)} schema(s) match",
                }
            )
            expected = {s: m["fingerprint"] for s, m in backup.manifest.get("migrations", {}).items()}
            restored = {s: m["fingerprint"] for s, m in found["migrations"].items()}
            checks.append(
                {
                    "check": "migration state",
                    "ok": expected == restored,
                    "detail": "fingerprints match"
                    if expected == restored
                    else f"manifest {expected}, restored {restored}",
                }
            )
    except Exception as exc:
        checks.append({"check": "restore", "ok": False, "detail": f"{type(exc).__name__}: {exc}"[:1000]})
    drill.checks = checks
    drill.passed = bool(checks) and all(c["ok"] for c in checks)
    drill.reason = "" if drill.passed else "; ".join(c["detail"] for c in checks if not c["ok"])[:2000]
    drill.finished_at = timezone.now()
    drill.save()
    audit_record(
        actor=actor,
        action=Action.DRILL_PASSED if drill.passed else Action.DRILL_FAILED,
        tenant=backup.tenant,
        target=str(backup.pk),
        details={"drill": drill.pk, "rto_seconds": drill.rto_seconds, "reason": drill.reason[:500]},
    )
    return drill


def drill_sample(*, sample: int, actor: Actor) -> list[RestoreDrill]:
    return [drill_run(backup=b, actor=actor) for b in drill_candidates(sample=sample)]


# --- data rights: export and erasure -------------------------------------------------------------


def _write_export_archive(
    tenant: Tenant, out: BinaryIO, progress: Callable[[int, int], None] | None = None
) -> dict:
    """A portable archive of the shop's tables (tar.gz of CSV files + manifest.json), written to ``out``.

    Every table is read in one snapshot. Each CSV is spooled (to disk past 8 MB), because tar
    needs a member's size before its bytes; ``out`` only ever receives ``write()`` calls.
    """
    summary = {
        "tenant": tenant.subdomain,
        "schema": tenant.schema_name,
        "exported_at": timezone.now().isoformat(),
        "format": "csv with header, UTF-8",
        "tables": {},
    }
    with pgtools.connect() as conn, tarfile.open(fileobj=out, mode="w|gz") as archive:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables = manifest_mod.schema_tables(conn, [tenant.schema_name])[tenant.schema_name]
        for done, table in enumerate(tables, 1):
            with tempfile.SpooledTemporaryFile(8 * 1024 * 1024) as spool, conn.cursor() as cursor:
                query = psycopg_sql.SQL("COPY {}.{} TO STDOUT WITH (FORMAT csv, HEADER)").format(
                    psycopg_sql.Identifier(tenant.schema_name), psycopg_sql.Identifier(table)
                )
                with cursor.copy(query) as copy:
                    for data in copy:
                        spool.write(data)
                summary["tables"][table] = cursor.rowcount  # COPY's own count, same snapshot
                info = tarfile.TarInfo(f"{tenant.subdomain}/{table}.csv")
                info.size, info.mtime = spool.tell(), int(time.time())
                spool.seek(0)
                archive.addfile(info, spool)
            if progress:
                progress(done, len(tables))
        body = json.dumps(summary, indent=2).encode()
        info = tarfile.TarInfo(f"{tenant.subdomain}/manifest.json")
        info.size, info.mtime = len(body), int(time.time())
        archive.addfile(info, io.BytesIO(body))
        conn.rollback()
    return summary


def _check_exportable(tenant: Tenant | None, label: str) -> None:
    if tenant is None or tenant.status not in BACKUPABLE_STATUSES:
        raise BackupStateError(f"Cannot export {label!r}: it is {tenant.status if tenant else 'deleted'}.")


def tenant_export(*, tenant: Tenant, out: BinaryIO, actor: Actor) -> dict:
    """Write the shop's archive to ``out`` here and now (export_tenant --output)."""
    _check_exportable(tenant, tenant.subdomain)
    summary = _write_export_archive(tenant, out)
    audit_record(
        actor=actor,
        action=Action.TENANT_EXPORTED,
        tenant=tenant,
        target=tenant.subdomain,
        details={"tables": summary["tables"]},
    )
    return summary


def export_create(*, tenant: Tenant, actor: Actor, enqueue: bool = True) -> Export:
    """Record a queued export (one per tenant at a time) and, by default, enqueue its job."""
    connection.set_schema_to_public()
    tenant = Tenant.objects.get(pk=tenant.pk)
    _check_exportable(tenant, tenant.subdomain)
    storage = backup_storage()
    try:
        with transaction.atomic():
            export = Export.objects.create(tenant=tenant, tenant_label=tenant.subdomain, storage=storage.name)
            audit_record(actor=actor, action=Action.EXPORT_QUEUED, tenant=tenant, target=str(export.pk))
            if enqueue:
                jobs.export_run_job.delay(str(export.pk), *actor.job_args)
    except IntegrityError:
        raise BackupStateError(
            f"An export of {tenant.subdomain!r} is already queued or running; wait for it to finish."
        ) from None
    return export


class _HashingWriter:
    """What tarfile writes to: hashed and counted on its way into the store's writer."""

    def __init__(self, writer):
        self.writer, self.digest, self.size = writer, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.writer.write(bytes(data))
        return len(data)


def export_run(*, export_id, actor: Actor) -> Export:
    """Stream the archive into the backup store. Idempotent: a finished export is returned as it is."""
    connection.set_schema_to_public()
    refused = None
    with transaction.atomic():
        export = Export.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=export_id)
        if export.status == Export.Status.RUNNING:
            raise BackupStateError(f"Export {export.pk} is already running.")
        if export.status != Export.Status.QUEUED:
            return export
        tenant = export.tenant
        try:
            _check_exportable(tenant, export.tenant_label)
        except BackupError as exc:
            refused = exc
        else:
            now = timezone.now()
            export.status, export.started_at, export.heartbeat_at = Export.Status.RUNNING, now, now
            export.location = f"exports/{tenant.pk}/{export.created_at:%Y%m%dT%H%M%SZ}-{export.pk}.tar.gz"
            export.save()
    if refused is not None:
        _fail(export, str(refused), actor)
        raise refused

    def progress(done: int, total: int) -> None:
        Export.objects.filter(pk=export.pk).update(
            heartbeat_at=timezone.now(), tables_done=done, tables_total=total
        )

    storage = backup_storage()
    try:
        writer = storage.writer(export.location)
        Export.objects.filter(pk=export.pk).update(pending_upload_id=writer.upload_id)
        out = _HashingWriter(writer)
        try:
            summary = _write_export_archive(tenant, out, progress)
            writer.commit()
        except BaseException:
            _abort(export, storage, writer)
            raise
    except BaseException as exc:
        if not isinstance(exc, Exception):
            reason = f"Interrupted ({type(exc).__name__}); the partial archive was discarded."
            _fail(export, reason, actor)
            raise
        _fail(export, _reason(exc), actor)
        _reraise(exc, f"Export of {export.tenant_label!r} failed")
    finished = timezone.now()
    done = {
        "status": Export.Status.READY,
        "pending_upload_id": "",
        "size_bytes": out.size,
        "sha256": out.digest.hexdigest(),
        "tables": summary["tables"],
        "finished_at": finished,
        "expires_at": finished + timedelta(days=settings.BACKUP_EXPORT_KEEP_DAYS),
    }
    # Only if still running: the reaper may have declared this run dead (no progress for too long).
    if not Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING).update(**done):
        _delete_quietly(storage, export.location)
        raise BackupStateError(f"Export {export.pk} was declared dead while it ran; its archive was removed.")
    export.refresh_from_db()
    audit_record(
        actor=actor,
        action=Action.TENANT_EXPORTED,
        tenant=tenant,
        target=str(export.pk),
        details={
            "tables": summary["tables"],
            "size": export.size_bytes,
            "sha256": export.sha256,
            "expires_at": export.expires_at.isoformat(),
        },
    )
    return export


def export_delete(*, export: Export, reason: str, actor: Actor) -> None:
    storage = backup_storage()
    if export.location and export.storage == storage.name and export.status == Export.Status.READY:
        storage.delete(export.location)
    audit_record(
        actor=actor,
        action=Action.EXPORT_DELETED,
        tenant=export.tenant,
        target=str(export.pk),
        details={"reason": reason, "tenant": export.tenant_label, "location": export.location},
    )
    export.delete()


def backup_before_erasure(*, tenant: Tenant, actor: Actor) -> Backup:
    """Deprovisioning hook: a final backup, and every backup of the tenant set to expire.

    Prune deletes them (final backup included) after BACKUP_FINAL_RETENTION_DAYS: the erasure.
    Raises if the final backup fails, so the caller drops nothing.
    """
    final = backup_tenant_now(tenant=tenant, actor=actor, purpose=Backup.Purpose.FINAL)
    expires = timezone.now() + timedelta(days=settings.BACKUP_FINAL_RETENTION_DAYS)
    Backup.objects.filter(tenant=tenant).update(expires_at=expires)
    audit_record(
        actor=actor,
        action=Action.BACKUP_ERASURE_SCHEDULED,
        tenant=tenant,
        target=tenant.subdomain,
        details={"final_backup": str(final.pk), "erase_after": expires.isoformat()},
    )
    return final
