"""Migrating one schema, in the main process or in a worker: one transaction, its lock, a guard.

migrate_schema runs either Django's executor under the schema's lock (_run_locked) or the
group's recorded script behind a guard that takes the lock and checks the schema's state in the
same message (_replay_guarded); a schema whose state changed meanwhile is skipped or re-planned.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from django.db import DatabaseError, transaction
from django.db.migrations.recorder import MigrationRecorder
from django_tenants.signals import schema_migrated, schema_pre_migration

from core.db import connection
from tenants.migration_state import expected_migration_fingerprint, fingerprint_sql
from tenants.models import SchemaPoolEntry
from tenants.schema_migrations.planning import _Group, _GroupRuntime
from tenants.schema_migrations.recording import _SqlRecorder
from tenants.schema_migrations.targets import (
    SchemaResult,
    SchemaTarget,
    _applied_in,
    _pool_table,
    schema_fingerprints,
)

logger = logging.getLogger(__name__)

# First key of the advisory lock that keeps two runs from migrating the same schema at once.
LOCK_CLASS = 0x6D696772


class _StateChanged(Exception):
    pass


def _fingerprint_now(schema_name: str, *, has_table: bool) -> str | None:
    if not has_table:
        return schema_fingerprints([schema_name]).get(schema_name)
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(fingerprint_sql(schema_name))
        return cursor.fetchone()[0]


@contextmanager
def _schema_transaction(target: SchemaTarget, runtime: _GroupRuntime):
    """One transaction (when the plan allows it) holding the schema's lock and the pool row."""
    atomic = runtime.atomic
    # Commits need not wait for the disk one by one: the run ends with one durable commit, which
    # flushes the WAL of all earlier ones (a crash before it loses whole schemas' migrations,
    # DDL and record together, never half of one). Not inside a caller's transaction.
    deferred_flush = "on" if connection.in_atomic_block else "off"
    with transaction.atomic() if atomic else _nothing():
        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            if atomic:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s)), "
                    "set_config('synchronous_commit', %s, true)",
                    [LOCK_CLASS, target.name, deferred_flush],
                )
            else:
                cursor.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, target.name])
            try:
                if target.kind == "pool":
                    # Locked, so provisioning (which skips locked spares) cannot claim it meanwhile.
                    cursor.execute(
                        f"SELECT 1 FROM {_pool_table()} WHERE schema_name = %s AND status = %s "
                        "FOR UPDATE SKIP LOCKED",
                        [target.name, SchemaPoolEntry.Status.READY],
                    )
                    if cursor.fetchone() is None:
                        yield "claimed"
                        return
                yield "locked"
            finally:
                if not atomic:
                    connection.set_schema_to_public()
                    with connection.cursor() as unlock:
                        unlock.execute(
                            "SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_CLASS, target.name]
                        )


def _flush_commits() -> None:
    """A durable commit: PostgreSQL flushes the WAL up to it, earlier asynchronous commits too."""
    connection.set_schema_to_public()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT txid_current()")  # takes a transaction id, so the commit is logged


@contextmanager
def _nothing():
    yield


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


class _Skip(Exception):
    """The schema is left alone: (status, note)."""


_GUARD_MARK = "migrate_schemas guard:"


def migrate_schema(
    runtime: _GroupRuntime, target: SchemaTarget, *, recorder: _SqlRecorder | None = None,
    replay: str | None = None, retried: bool = False,
) -> SchemaResult:
    """Migrate one schema in its own transaction; never raises, the result says what happened."""
    started = time.perf_counter()
    result = SchemaResult(target.name, target.kind, "migrated")
    try:
        if replay is not None:
            result.applied = _replay_guarded(runtime, target, replay)
        else:
            result.applied = _run_locked(runtime, target, recorder)
        _send_schema_migrated(result)
    except _Skip as skip:
        result.status, result.note = skip.args
    except _StateChanged:
        connection.set_schema_to_public()
        if retried:
            result.status, result.error = "failed", "its migrations changed during the run; run again"
        else:
            # Another run got there first, or someone changed it: plan it on its own.
            current = _fingerprint_now(target.name, has_table=False)
            fresh = _Group(current, _applied_in(target.name), [target])
            result = migrate_schema(_GroupRuntime(fresh), target, retried=True)
    except Exception as exc:
        result.status, result.error = "failed", _error_text(exc)
    finally:
        connection.set_schema_to_public()
        result.seconds = time.perf_counter() - started
    return result


def _check_still_behind(target: SchemaTarget, runtime: _GroupRuntime) -> None:
    current = _fingerprint_now(target.name, has_table=runtime.group.key is not None)
    if current == runtime.group.key:
        return
    if current == expected_migration_fingerprint():
        raise _Skip("current", "migrated meanwhile")
    raise _StateChanged


def _run_locked(runtime: _GroupRuntime, target: SchemaTarget, recorder: _SqlRecorder | None) -> list[str]:
    """Django's executor (optionally recording its SQL), under the schema's lock."""
    with _schema_transaction(target, runtime) as lock:
        if lock == "claimed":
            raise _Skip("skipped", "claimed by provisioning meanwhile")
        _check_still_behind(target, runtime)
        if runtime.group.key is None:
            # Created in the schema itself, never found through the search_path in public.
            connection.set_schema(target.name, include_public=False)
            MigrationRecorder(connection).ensure_schema()
        connection.set_schema(target.name)
        schema_pre_migration.send(migrate_schema, schema_name=target.name)
        applied = runtime.run_executor(recorder)
        runtime.emit_post_migrate()
    return applied


def _replay_guarded(runtime: _GroupRuntime, target: SchemaTarget, script: str) -> list[str]:
    """The recorded script behind a guard, in one message: lock, check, DDL and records at once.

    The guard takes the schema's lock (and the spare's pool row), then checks the schema is still
    at the group's state; PL/pgSQL gives each of its queries a fresh snapshot, so the check sees
    whatever a run that held the lock before committed.
    """
    name = connection.ops.compose_sql("%s", [target.name])
    pool_check = ""
    if target.kind == "pool":
        pool_check = (
            f"PERFORM 1 FROM {_pool_table()} WHERE schema_name = {name} "
            f"AND status = '{SchemaPoolEntry.Status.READY}' FOR UPDATE SKIP LOCKED; "
            f"IF NOT FOUND THEN RAISE EXCEPTION '{_GUARD_MARK} claimed'; END IF; "
        )
    guard = (
        "DO $migrate_guard$ BEGIN "
        f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, hashtext({name})); "
        f"PERFORM set_config('synchronous_commit', '{'on' if connection.in_atomic_block else 'off'}', true); "
        f"{pool_check}"
        f"IF ({fingerprint_sql(target.name)}) IS DISTINCT FROM '{runtime.group.key}' "
        f"THEN RAISE EXCEPTION '{_GUARD_MARK} changed'; END IF; "
        "END $migrate_guard$;\n"
    )
    try:
        with transaction.atomic():
            connection.set_schema(target.name)
            schema_pre_migration.send(migrate_schema, schema_name=target.name)
            with connection.cursor() as cursor:
                cursor.execute(guard + script, None)
            runtime.emit_post_migrate()
    except DatabaseError as exc:
        if f"{_GUARD_MARK} claimed" in str(exc):
            raise _Skip("skipped", "claimed by provisioning meanwhile") from None
        if f"{_GUARD_MARK} changed" in str(exc):
            connection.set_schema_to_public()
            _check_still_behind(target, runtime)  # raises: current, or changed
        raise
    return list(runtime.plan_keys)


def _send_schema_migrated(result: SchemaResult) -> None:
    """django-tenants' signal, sent (as its command does) once the schema is committed."""
    try:
        schema_migrated.send(migrate_schema, schema_name=result.schema)
    except Exception as exc:
        # The migration itself is committed; say so rather than report a rollback.
        logger.exception("A schema_migrated receiver failed for %s", result.schema)
        result.note = f"a schema_migrated receiver failed: {_error_text(exc)}"
