"""Backups are made here: created (queued), run (pg_dump streamed into the store), verified, reaped.

Each service validates first (nothing is touched on bad input), writes an audit event, and raises a
BackupError whose message says what to fix.
"""

import hashlib
import json
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import (
    jobs,  # it imports this module too: used at call time
    pgtools,
)
from backups import manifest as manifest_mod
from backups.errors import BackupError, BackupStateError, StorageError
from backups.models import Backup, Export, Restore
from backups.services import offsite
from backups.services._common import (
    BACKUPABLE_STATUSES,
    Progress,
    abort_upload,
    check_storage,
    delete_quietly,
    error_reason,
    logger,
    manifest_key,
    mark_failed,
    reraise,
)
from backups.services.integrity import checksum_require, without_excluded_data
from backups.storage import backup_storage
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Tenant

READ_CHUNK = 1024 * 1024
HEARTBEAT_SECONDS = 2.0
# Worked by backups.worker.BackupWorker, which runs jobs without forking (see that module).


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


def backup_run(*, backup_id: uuid.UUID | str, actor: Actor, progress: Progress | None = None) -> Backup:
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
        mark_failed(backup, str(refused), actor)
        raise refused
    try:
        _dump_and_upload(backup, progress)
    except BaseException as exc:
        # BaseException too: a worker's cold shutdown (SystemExit) is recorded at once, not by the reaper.
        if not isinstance(exc, Exception):
            mark_failed(
                backup, f"Interrupted ({type(exc).__name__}); the partial upload was discarded.", actor
            )
            raise
        mark_failed(backup, error_reason(exc), actor)
        reraise(exc, f"Backup {backup.pk} failed")
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
    schemas_of_kind: dict[str, list[str]] = {
        Backup.Kind.TENANT: [backup.schema_name],
        Backup.Kind.PLATFORM: ["public"],
    }
    schemas = schemas_of_kind.get(backup.kind)
    digest, size = hashlib.sha256(), 0
    # The manifest is read in the very snapshot pg_dump dumps, so its row counts are exact.
    with pgtools.connect() as snap_conn:
        snap_conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = snap_conn.execute(
            "SELECT pg_export_snapshot(), %s::text IS NULL OR EXISTS "
            "(SELECT 1 FROM pg_namespace WHERE nspname = %s::text)",
            [schemas[0] if schemas else None] * 2,
        ).fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        snapshot, found = row
        if not found:
            assert schemas is not None  # found is true when no schema is named
            raise BackupStateError(f"Schema {schemas[0]!r} does not exist; nothing to back up.")
        if backup.kind == Backup.Kind.TENANT:
            assert schemas is not None  # a tenant backup dumps its schema
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
            assert proc.stdout is not None  # stdout=PIPE
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
                abort_upload(backup, storage, writer)
                raise
        server_version = snap_conn.info.parameter_status("server_version")
        snap_conn.rollback()
    finished = timezone.now()
    backup.size_bytes, backup.sha256 = size, digest.hexdigest()
    backup.finished_at, backup.duration_seconds = finished, time.monotonic() - started
    assert backup.started_at is not None  # backup_run sets it before the dump
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
        "tables": without_excluded_data(contents["tables"]),
        "excluded_table_data": list(pgtools.EXCLUDED_TABLE_DATA),
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
        delete_quietly(storage, backup.location)
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
        delete_quietly(storage, backup.location)
        delete_quietly(storage, manifest_key(backup))
        raise BackupStateError(f"Backup {backup.pk} was declared dead while it ran; its object was removed.")
    if progress:
        progress(size, backup.duration_seconds)


def backup_verify(*, backup: Backup, actor: Actor) -> Backup:
    """Read the stored object back and compare size and sha256 with the manifest."""
    check_storage(backup)
    if backup.status not in (Backup.Status.UPLOADED, Backup.Status.VERIFIED):
        raise BackupStateError(
            f"Backup {backup.pk} is {backup.status}; only uploaded backups can be verified."
        )
    checksum = checksum_require(
        location=backup.location,
        sha256=backup.sha256,
        size_bytes=backup.size_bytes,
        backup=backup,
        actor=actor,
        consequence="It is corrupt; do not restore it.",
    )
    if backup.status != Backup.Status.VERIFIED:
        Backup.objects.filter(pk=backup.pk).update(status=Backup.Status.VERIFIED)
        backup.status = Backup.Status.VERIFIED
        audit_record(
            actor=actor,
            action=Action.BACKUP_VERIFIED,
            tenant=backup.tenant,
            target=str(backup.pk),
            details={"sha256": checksum.sha256},
        )
        offsite.offsite_copy_queue(backup=backup, actor=actor)  # no-op without a second store
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
        mark_failed(
            backup, "The worker stopped mid-backup (no progress); the partial upload was discarded.", actor
        )
        reaped += 1
    for export in Export.objects.filter(status=Export.Status.RUNNING, heartbeat_at__lt=cutoff):
        reason = "The worker stopped mid-export (no progress); the partial archive was discarded."
        mark_failed(export, reason, actor)
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
