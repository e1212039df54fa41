"""Data exports: a shop's tables as a portable tar.gz of CSV files, here and now or in the background.

Background exports stream into the backup store (downloaded through short-lived links) and are
deleted by retention once they expire.
"""

import hashlib
import io
import json
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, BinaryIO, cast

import psycopg
from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import IntegrityError, transaction
from django.utils import timezone
from psycopg import sql as psycopg_sql

from backups import (
    jobs,  # it imports this module too: used at call time
    pgtools,
)
from backups import manifest as manifest_mod
from backups.errors import BackupError, BackupStateError
from backups.models import Export
from backups.services import offsite
from backups.services._common import (
    BACKUPABLE_STATUSES,
    abort_upload,
    delete_quietly,
    error_reason,
    mark_failed,
    reraise,
)
from backups.storage import StoreWriter, backup_storage
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Tenant

# What a shop's export (downloaded by its owner or staff) never holds: live session keys, and
# password hashes (each replaced by Django's unusable-password marker, so the CSV still loads into
# auth_user and its users set a new password by link). Backups keep the hashes: restores need them.
EXPORT_LEFT_OUT_TABLES = pgtools.EXCLUDED_TABLE_DATA
EXPORT_REDACTED_COLUMNS: dict[str, dict[str, str]] = {"auth_user": {"password": UNUSABLE_PASSWORD_PREFIX}}


def _export_query(conn: psycopg.Connection, schema: str, table: str) -> psycopg_sql.Composed:
    """COPY of one table as CSV, with the columns EXPORT_REDACTED_COLUMNS names replaced."""
    redacted = EXPORT_REDACTED_COLUMNS.get(table)
    source = psycopg_sql.SQL("{}.{}").format(psycopg_sql.Identifier(schema), psycopg_sql.Identifier(table))
    if redacted:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                [source.as_string(conn)],
            ).fetchall()
        ]
        select = psycopg_sql.SQL(", ").join(
            psycopg_sql.SQL("{} AS {}").format(psycopg_sql.Literal(redacted[c]), psycopg_sql.Identifier(c))
            if c in redacted
            else psycopg_sql.Identifier(c)
            for c in columns
        )
        source = psycopg_sql.SQL("(SELECT {} FROM {})").format(select, source)
    return psycopg_sql.SQL("COPY {} TO STDOUT WITH (FORMAT csv, HEADER)").format(source)


class _HashingWriter:
    """What tarfile writes to: hashed and counted on its way into the store's writer."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer, self.digest, self.size = writer, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.writer.write(bytes(data))
        return len(data)


def _write_export_archive(
    tenant: Tenant, out: BinaryIO | _HashingWriter, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """A portable archive of the shop's tables (tar.gz of CSV files + manifest.json), written to ``out``.

    Every table is read in one snapshot. Each CSV is spooled (to disk past 8 MB), because tar
    needs a member's size before its bytes; ``out`` only ever receives ``write()`` calls.
    """
    summary: dict[str, Any] = {
        "tenant": tenant.subdomain,
        "schema": tenant.schema_name,
        "exported_at": timezone.now().isoformat(),
        "format": "csv with header, UTF-8",
        "tables": {},
        "left_out": {
            **{t: "not exported: live sessions" for t in EXPORT_LEFT_OUT_TABLES},
            **{
                f"{t}.{c}": f"replaced by {marker!r}: password hashes are not exported; set a new password"
                for t, cols in EXPORT_REDACTED_COLUMNS.items()
                for c, marker in cols.items()
            },
        },
    }
    with pgtools.connect() as conn, tarfile.open(
        # Stream mode ("w|gz") only ever calls write(); typeshed asks for a whole file object.
        fileobj=cast(BinaryIO, out),
        mode="w|gz",
    ) as archive:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables = [
            table
            for table in manifest_mod.schema_tables(conn, [tenant.schema_name])[tenant.schema_name]
            if table not in EXPORT_LEFT_OUT_TABLES
        ]
        for done, table in enumerate(tables, 1):
            with tempfile.SpooledTemporaryFile(8 * 1024 * 1024) as spool, conn.cursor() as cursor:
                query = _export_query(conn, tenant.schema_name, table)
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


def _check_exportable(tenant: Tenant | None, label: str) -> Tenant:
    """The tenant, if it can be exported; raises BackupStateError otherwise."""
    if tenant is None or tenant.status not in BACKUPABLE_STATUSES:
        raise BackupStateError(f"Cannot export {label!r}: it is {tenant.status if tenant else 'deleted'}.")
    return tenant


def tenant_export(*, tenant: Tenant, out: BinaryIO, actor: Actor) -> dict[str, Any]:
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


def export_run(*, export_id: uuid.UUID | str, actor: Actor) -> Export:
    """Stream the archive into the backup store. Idempotent: a finished export is returned as it is."""
    connection.set_schema_to_public()
    refused = None
    with transaction.atomic():
        export = Export.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=export_id)
        if export.status == Export.Status.RUNNING:
            raise BackupStateError(f"Export {export.pk} is already running.")
        if export.status != Export.Status.QUEUED:
            return export
        try:
            tenant = _check_exportable(export.tenant, export.tenant_label)
        except BackupError as exc:
            refused = exc
        else:
            now = timezone.now()
            export.status, export.started_at, export.heartbeat_at = Export.Status.RUNNING, now, now
            export.location = f"exports/{tenant.pk}/{export.created_at:%Y%m%dT%H%M%SZ}-{export.pk}.tar.gz"
            export.save()
    if refused is not None:
        mark_failed(export, str(refused), actor)
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
            abort_upload(export, storage, writer)
            raise
    except BaseException as exc:
        if not isinstance(exc, Exception):
            reason = f"Interrupted ({type(exc).__name__}); the partial archive was discarded."
            mark_failed(export, reason, actor)
            raise
        mark_failed(export, error_reason(exc), actor)
        reraise(exc, f"Export of {export.tenant_label!r} failed")
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
        delete_quietly(storage, export.location)
        raise BackupStateError(f"Export {export.pk} was declared dead while it ran; its archive was removed.")
    export.refresh_from_db()
    assert export.expires_at is not None  # set by the update above
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
    offsite.offsite_copy_queue(export=export, actor=actor)  # no-op without a second store
    return export
