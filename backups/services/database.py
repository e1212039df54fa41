"""Whole-database restore (restore_database): a database or platform backup into a new database.

The live database is never written over. The source is named by its Backup row or, when the
database that held the rows is the one lost, by its key in the store (its manifest says the rest).
"""

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from psycopg import sql as psycopg_sql
from psycopg.types.json import Jsonb

from backups import pgtools
from backups.errors import BackupError, BackupIntegrityError, BackupStateError, StorageError
from backups.models import Backup
from backups.selectors import backup_get
from backups.services._common import (
    check_verified_and_here,
    error_reason,
    manifest_key_for,
    reraise,
)
from backups.services.integrity import manifest_compare, restore_verified, without_excluded_data
from backups.storage import backup_storage
from core.audit import Action, Actor, audit_record
from core.db import connection
from core.models import AuditEvent

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
    manifest: dict[str, Any]
    backup: Backup | None = None


def _check_database_kind(kind: str, label: str) -> None:
    if kind not in (Backup.Kind.DATABASE, Backup.Kind.PLATFORM):
        raise BackupStateError(
            f"{label} is a {kind} backup; restore_database takes database and platform backups "
            "(restore_tenant restores a tenant)."
        )


def database_source(
    *, backup_id: uuid.UUID | str | None = None, object_key: str | None = None
) -> DatabaseSource:
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
        check_verified_and_here(backup)
        return DatabaseSource(
            backup_id=str(backup.pk),
            kind=backup.kind,
            location=backup.location,
            sha256=backup.sha256,
            size_bytes=backup.size_bytes,
            manifest=backup.manifest,
            backup=backup,
        )
    assert object_key is not None  # exactly one of backup_id and object_key (checked above)
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
        row = conn.execute(DATABASE_HOLDS_SQL).fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        return row[0]


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
) -> dict[str, Any]:
    """Restore a database or platform backup into the new database ``target``, never the live one.

    The dump is read once, its sha256 checked on the way into a private working database; its
    sessions are emptied; it is checked against its manifest (row counts of every table,
    migration state) and only then renamed to ``target``: a failure at any step (a checksum
    mismatch included) drops the working database, so no half-restored one is left.
    """
    replaces_empty = database_restore_check(target=target)
    major, taken = pgtools.server_major(), int(source.manifest.get("pg_dump_major") or 0)
    if taken > major:
        raise BackupStateError(
            f"Backup {source.backup_id} was taken from PostgreSQL {taken}; this server is {major}. "
            f"Restore it onto a PostgreSQL {taken} (or newer) server."
        )
    started = time.monotonic()
    work = f"{target[:40]}_restoring_{uuid.uuid4().hex[:10]}"
    platform_only = source.kind == Backup.Kind.PLATFORM
    try:
        pgtools.database_create(work, without_public=platform_only)
        # One read of the object, hashed on its way into pg_restore: the bytes checked are the
        # bytes restored, and a mismatch drops the working database. One transaction for the
        # public schema alone; a whole database of thousands of tenant tables would run out of
        # lock slots in one, hence the working database.
        size = restore_verified(
            location=source.location,
            sha256=source.sha256,
            size_bytes=source.size_bytes,
            dbname=work,
            backup=source.backup,
            actor=actor,
            consequence="Nothing was restored.",
            single_transaction=platform_only,
            through=lambda chunks: _counted(chunks, "restore", source.size_bytes, progress),
        ).size
        # Backups taken before sessions were left out of dumps still carry them.
        sessions = pgtools.sessions_clear(work)
        # Links issued before the restore (to someone who has since left) must not work again.
        links = pgtools.set_password_links_void(work)
        expected = without_excluded_data(source.manifest.get("tables", {}))
        if progress:
            progress("check", 0, len(expected))
        problems = manifest_compare(manifest=source.manifest, dbname=work).problems
        if problems:
            raise BackupIntegrityError(
                "The restored database does not match the manifest: " + "; ".join(problems[:10])
            )
        summary: dict[str, Any] = {
            "backup": source.backup_id,
            "kind": source.kind,
            "target": target,
            "schemas": len(expected),
            "tables": sum(len(t) for t in expected.values()),
            "rows": sum(sum(t.values()) for t in expected.values()),
            "size_bytes": size,
            "sessions_deleted": sessions,
            "set_password_links_invalidated": links,
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
            {"target": target, "reason": error_reason(exc)[:500]},
        )
        if not isinstance(exc, Exception):
            raise
        reraise(exc, f"Restore into {target!r} failed and nothing was left behind")
    summary["seconds"] = round(time.monotonic() - started, 2)
    _audit_here(actor, Action.DATABASE_RESTORED, source, summary)
    return summary


def _audit_here(actor: Actor, action: Action, source: DatabaseSource, details: dict[str, Any]) -> None:
    """Audit in the database we run against, when it is a control plane's (it may be a bare server)."""
    connection.set_schema_to_public()
    if AuditEvent._meta.db_table in connection.introspection.table_names():
        audit_record(
            actor=actor,
            action=action,
            target=source.backup_id,
            details={"kind": source.kind, "location": source.location, **details},
        )


def _record_in_restored(dbname: str, source: DatabaseSource, actor: Actor, summary: dict[str, Any]) -> None:
    """Tell the restored control plane what happened to it.

    The dump was taken while this very backup ran, so its row there says "running": the reaper
    would fail it. It is set to what the manifest records, and the restore is audited there too.
    """
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
                "details) VALUES (now(), %s, %s, %s, '', %s, %s)"
            ).format(psycopg_sql.Identifier(audit_table)),
            [actor.type, actor.name[:200], Action.DATABASE_RESTORED.value, source.backup_id, Jsonb(summary)],
        )
