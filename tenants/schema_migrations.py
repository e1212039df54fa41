"""Migrating many tenant schemas fast: the engine behind our ``migrate_schemas`` command.

django-tenants' command opens a connection and runs Django's whole ``migrate`` per schema
(loader, checks, post_migrate), about 58 ms a schema here even with nothing to do. Instead:

1. One query per batch of schemas compares each schema's ``django_migrations`` with the code's
   migrations (the fingerprint in tenants.migration_state). Current schemas cost nothing more.
2. Behind schemas are grouped by what they have applied (same fingerprint, same plan); each group
   is planned once, with Django's own loader and executor.
3. The group's first schema (the "leader") is migrated by Django's MigrationExecutor while the
   schema editor's SQL is recorded. The other schemas of the group replay that SQL, but only if
   the plan is made of Django's own schema operations (no RunPython, no callable defaults, all
   atomic) and the leader ran no query besides that SQL and the migration records: an
   introspection query would mean the SQL depends on the schema it ran in. Otherwise every
   schema runs the real executor. Either way the loader, plan and rendered state are built once
   per group, and each schema is migrated in one transaction with its own search_path.
4. Schemas are spread over N forked worker processes that keep their connection. A schema that
   fails is rolled back and reported; the others go on.

post_migrate runs for each migrated schema. Every receiver hears every app, as with ``migrate``,
except Django's own content-type and permission receivers, which hear only the apps whose models
the plan creates, renames or changes options of (for the others they would find nothing to add).
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module

from asgiref.local import Local
from django.apps import apps as global_apps
from django.core.management import call_command
from django.core.management.sql import emit_pre_migrate_signal
from django.db import DatabaseError, connections, router, transaction
from django.db.migrations import operations as ops
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ProjectState, StateApps
from django.db.models.signals import post_migrate
from django.utils.module_loading import module_has_submodule
from django_tenants.signals import schema_migrated, schema_pre_migration
from django_tenants.utils import (
    get_public_schema_name,
    get_tenant_base_migrate_command_class,
    has_multi_type_tenants,
    quote_schema_name,
)

from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.migration_state import expected_migration_fingerprint, fingerprint_sql
from tenants.models import SchemaPoolEntry, Tenant

logger = logging.getLogger(__name__)

# Schemas compared per fingerprint query: each one touches a table, and PostgreSQL keeps a lock
# per table until the query ends; 200 stays far below max_locks_per_transaction * connections.
SCAN_BATCH = 200
# A leader that fails may fail because of its own data; try a few others before giving up replay.
MAX_LEADERS = 3
# First key of the advisory lock that keeps two runs from migrating the same schema at once.
LOCK_CLASS = 0x6D696772
# Tenants whose schema is kept in step; a deleted tenant's kept schema is left as it was.
MIGRATED_STATUSES = tuple(s for s in Tenant.Status.values if s != Tenant.Status.DELETED)

_TRANSACTION_CONTROL = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)


class SchemaMigrationError(Exception):
    """A problem that stops the whole run (bad arguments, broken migration graph)."""


@dataclass(frozen=True)
class SchemaTarget:
    name: str
    kind: str  # "tenant", "pool" (a ready spare schema) or "schema" (named with --schema)


@dataclass
class SchemaResult:
    schema: str
    kind: str
    status: str  # "migrated", "current", "skipped" or "failed"
    applied: list[str] = field(default_factory=list)
    error: str = ""
    note: str = ""
    seconds: float = 0.0


@dataclass
class PendingSchema:
    schema: str
    kind: str
    migrations: list[str]


@dataclass
class MigrateReport:
    public_applied: list[str] = field(default_factory=list)
    public_checked: bool = False
    checked: int = 0
    current: int = 0
    results: list[SchemaResult] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # one line per plan, for verbose output
    seconds: float = 0.0
    workers: int = 1

    @property
    def migrated(self) -> list[SchemaResult]:
        return [r for r in self.results if r.status == "migrated"]

    @property
    def failed(self) -> list[SchemaResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def skipped(self) -> list[SchemaResult]:
        return [r for r in self.results if r.status == "skipped"]

    def summary(self) -> str:
        public = (
            f"public: {len(self.public_applied)} applied; " if self.public_applied
            else "public: up to date; " if self.public_checked else ""
        )
        current = self.current + sum(1 for r in self.results if r.status == "current")
        parts = [f"{len(self.migrated)} migrated", f"{current} up to date"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        parts.append(f"{len(self.failed)} failed")
        return (
            f"{public}{self.checked} tenant/pool schema(s): {', '.join(parts)} "
            f"in {self.seconds:.2f} s ({self.workers} worker(s))"
        )


# ---------------------------------------------------------------------------------------------
# Finding the schemas and what they miss


def _pool_table() -> str:
    return f"{quote_schema_name(get_public_schema_name())}.{SchemaPoolEntry._meta.db_table}"


def migration_targets(*, schema_name: str | None = None) -> list[SchemaTarget]:
    """Tenant schemas (every status but deleted) and ready spare schemas that exist, in order."""
    public = get_public_schema_name()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        if schema_name is not None:
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
            if cursor.fetchone() is None:
                raise SchemaMigrationError(
                    f"Schema {schema_name!r} does not exist; check the name "
                    "(tenant schemas are listed in the admin)."
                )
            cursor.execute(
                f"SELECT 'pool' FROM {_pool_table()} WHERE schema_name = %s AND status = %s",
                [schema_name, SchemaPoolEntry.Status.READY],
            )
            # "schema": anything else, such as a spare being built by pool_schema_build().
            kind = "pool" if cursor.fetchone() else "schema"
            if kind == "schema" and Tenant.objects.filter(schema_name=schema_name).exists():
                kind = "tenant"
            return [SchemaTarget(schema_name, kind)]
        cursor.execute(
            f"""
            SELECT t.schema_name, 'tenant' FROM {quote_schema_name(public)}.{Tenant._meta.db_table} t
              JOIN pg_namespace n ON n.nspname = t.schema_name
             WHERE t.schema_name <> %s AND t.status = ANY(%s)
            UNION ALL
            SELECT p.schema_name, 'pool' FROM {_pool_table()} p
              JOIN pg_namespace n ON n.nspname = p.schema_name
             WHERE p.status = %s
            ORDER BY 2 DESC, 1
            """,
            [public, list(MIGRATED_STATUSES), SchemaPoolEntry.Status.READY],
        )
        return [SchemaTarget(name, kind) for name, kind in cursor.fetchall()]


def schema_fingerprints(schema_names: list[str]) -> dict[str, str | None]:
    """Each schema's migration fingerprint (None: no django_migrations table), batch by batch."""
    found: dict[str, str | None] = {}
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        for start in range(0, len(schema_names), SCAN_BATCH):
            batch = schema_names[start:start + SCAN_BATCH]
            cursor.execute(
                "SELECT nspname FROM pg_namespace n WHERE nspname = ANY(%s) "
                "AND to_regclass(format('%%I.django_migrations', nspname)) IS NOT NULL",
                [batch],
            )
            has_table = {row[0] for row in cursor.fetchall()}
            with_table = [name for name in batch if name in has_table]
            found.update((name, None) for name in batch)
            if not with_table:
                continue
            # Schema names reach the SQL quoted as identifiers; escape % for the driver.
            union = " UNION ALL ".join(
                "SELECT %s, ({})".format(fingerprint_sql(name).replace("%", "%%")) for name in with_table
            )
            cursor.execute(union, with_table)
            found.update(cursor.fetchall())
    return found


def _applied_in(schema_name: str) -> frozenset[tuple[str, str]]:
    connection.set_schema(schema_name, include_public=False)
    try:
        return frozenset(MigrationRecorder(connection).applied_migrations())
    finally:
        connection.set_schema_to_public()


# ---------------------------------------------------------------------------------------------
# Planning with Django's own loader, once per group of schemas at the same state


class _GivenStateLoader(MigrationLoader):
    """Django's loader, with the applied migrations given instead of read from one schema."""

    def __init__(self, applied: Iterable[tuple[str, str]]):
        self._given = frozenset(applied)
        super().__init__(None)

    @property
    def applied_migrations(self):
        return self._applied

    @applied_migrations.setter
    def applied_migrations(self, value):
        # build_graph() sets {} when the loader has no connection; start from the given set.
        self._applied = dict(value) if value else dict.fromkeys(self._given)


class _Executor(MigrationExecutor):
    def __init__(self, loader: MigrationLoader, progress_callback=None):
        self.connection = connection
        self.loader = loader
        self.recorder = MigrationRecorder(connection)
        self.progress_callback = progress_callback


def _flatten(operations, *, state: bool = False):
    for op in operations:
        if isinstance(op, ops.SeparateDatabaseAndState):
            yield from _flatten(op.state_operations if state else op.database_operations, state=state)
        else:
            yield op


def _replay_blocker(plan) -> str:
    """Why the plan's SQL may differ between schemas at the same state ('' when it cannot).

    Call it with the connection on one of the group's schemas: operations the router keeps out
    of that kind of schema (shared apps in a tenant schema) run nothing there.
    """
    for migration, backwards in plan:
        name = f"{migration.app_label}.{migration.name}"
        if backwards:
            return f"{name} runs backwards"
        if not migration.atomic:
            return f"{name} is not atomic"
        for op in _flatten(migration.operations):
            if not router.allow_migrate(connection.alias, migration.app_label, **getattr(op, "hints", {})):
                continue
            kind = type(op).__name__
            if isinstance(op, ops.RunPython):
                return f"{name} runs Python ({kind})"
            if not type(op).__module__.startswith("django.db.migrations.operations"):
                return f"{name} uses {type(op).__module__}.{kind}"
            new_field = getattr(op, "field", None)
            if isinstance(op, ops.AddField | ops.AlterField) and new_field is not None and (
                (new_field.has_default() and callable(new_field.default))
                or getattr(new_field, "auto_now", False)
                or getattr(new_field, "auto_now_add", False)
            ):
                return f"{name} fills {op.name} with a value computed per run"
    return ""


def _django_post_migrate_receivers() -> frozenset:
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    return frozenset({create_permissions, create_contenttypes})


def _post_migrate_scope(plan, *, fresh: bool) -> tuple[str, ...] | None:
    """App labels for which Django's own post_migrate receivers have work after ``plan``.

    None means every app (a fresh schema). Content types and permissions only change for
    models the plan creates or renames, or whose options (permissions) it alters.
    """
    if fresh:
        return None
    labels = set()
    for migration, _ in plan:
        for op in _flatten(migration.operations, state=True):
            if isinstance(op, ops.CreateModel | ops.RenameModel | ops.AlterModelOptions):
                labels.add(migration.app_label)
    return tuple(sorted(labels))


@dataclass
class _Group:
    key: str | None  # the fingerprint its schemas share (None: no django_migrations table)
    applied: frozenset
    schemas: list[SchemaTarget]
    runtime: _GroupRuntime | None = None
    replay_sql: str | None = None  # recorded by the leader, when replay is safe
    blocker: str = ""  # why its schemas run Django's executor rather than replay
    error: str = ""  # why none of its schemas can be migrated (inconsistent history)


class _GroupRuntime:
    """Loader, plan and states for one group, built once per process and reused per schema."""

    def __init__(self, group: _Group):
        self.group = group
        self.loader = _GivenStateLoader(group.applied)
        self._applied: list[str] = []
        self.executor = _Executor(self.loader, self._progress)
        self.targets = self.loader.graph.leaf_nodes()
        self.plan = self.executor.migration_plan(self.targets)
        self.plan_keys = [f"{m.app_label}.{m.name}" for m, _ in self.plan]
        self.atomic = all(m.atomic for m, _ in self.plan)
        self.post_scope = _post_migrate_scope(self.plan, fresh=not group.applied)
        self._pre_state: ProjectState | None = None
        self._post_apps: StateApps | None = None

    def _progress(self, action, migration=None, fake=False):
        if action == "apply_success":
            self._applied.append(f"{migration.app_label}.{migration.name}")

    def pre_state(self):
        if self._pre_state is None:
            # A private executor method (docs/migrations.md lists it).
            executor = self.executor
            state = executor._create_project_state(with_applied_migrations=True)  # type: ignore[attr-defined]
            # As migrate does; contenttypes uses it to add its rename operations to the plan.
            emit_pre_migrate_signal(0, False, connection.alias, apps=state.apps, plan=self.plan)
            self._pre_state = state
        return self._pre_state

    def post_apps(self):
        if self._post_apps is None:
            # The end state of a full migration, re-rendered the way migrate does it.
            state = self.loader.project_state()
            state.clear_delayed_apps_cache()
            post_apps = state.apps
            from django.db.migrations.state import ModelState

            with post_apps.bulk_update():
                keys = []
                for model_state in post_apps.real_models:
                    key = model_state.app_label, model_state.name_lower
                    keys.append(key)
                    post_apps.unregister_model(*key)
            post_apps.render_multiple([ModelState.from_model(global_apps.get_model(*k)) for k in keys])
            self._post_apps = post_apps
        return self._post_apps

    def emit_post_migrate(self) -> None:
        """post_migrate for every app, as migrate sends it; Django's own receivers only in scope.

        Outside ``post_scope``, create_contenttypes and create_permissions would only read and
        find nothing to add (two queries or more an app, each schema); they are left out there.
        Every other receiver (the project's, a third party's) hears every app, as with migrate.
        """
        django_receivers = _django_post_migrate_receivers()
        for app_config in global_apps.get_app_configs():
            if app_config.models_module is None:
                continue
            if self.post_scope is None or app_config.label in self.post_scope:
                receivers = None  # all of them, through the signal
            else:
                sync_receivers, async_receivers = post_migrate._live_receivers(app_config)
                if async_receivers:
                    receivers = None  # Signal.send knows how to run those; no shortcut
                else:
                    receivers = [r for r in sync_receivers if r not in django_receivers]
                    if not receivers:
                        continue
            kwargs = dict(
                app_config=app_config, verbosity=0, interactive=False, using=connection.alias,
                apps=self.post_apps(), plan=self.plan,
            )
            if receivers is None:
                post_migrate.send(sender=app_config, **kwargs)
            else:
                for receiver in receivers:  # what Signal.send does for each sync receiver
                    receiver(signal=post_migrate, sender=app_config, **kwargs)

    def run_executor(self, recorder: _SqlRecorder | None = None) -> list[str]:
        """Django's executor on the current schema, from a copy of the rendered state."""
        self._applied = []
        self.executor.recorder = MigrationRecorder(connection)
        state = self.pre_state().clone()
        if recorder is None:
            self.executor.migrate(self.targets, plan=self.plan, state=state)
        else:
            with recorder.recording(self.executor.recorder):
                self.executor.migrate(self.targets, plan=self.plan, state=state)
        return list(self._applied)


class _SqlRecorder:
    """Records what the schema editor and the migration recorder run; flags any other query."""

    def __init__(self):
        self.events: list[tuple] = []
        self.foreign: list[str] = []
        self._trusted = 0

    @contextmanager
    def trusted(self):
        self._trusted += 1
        try:
            yield
        finally:
            self._trusted -= 1

    def _watch(self, execute, sql, params, many, context):
        if not self._trusted and not _TRANSACTION_CONTROL.match(str(sql)):
            self.foreign.append(str(sql)[:200])
        return execute(sql, params, many, context)

    def _schema_editor(self, original):
        def make(*args, **kwargs):
            editor = original(*args, **kwargs)
            editor_execute = editor.execute

            def execute(sql, params=()):
                # What the PostgreSQL editor would send: params merged client-side.
                text = str(sql) if params is None else connection.ops.compose_sql(str(sql), params)
                self.events.append(("sql", text))
                with self.trusted():
                    return editor_execute(text, None)

            editor.execute = execute
            return editor

        return make

    def _wrap_recorder(self, recorder: MigrationRecorder) -> None:
        for name in ("has_table", "ensure_schema", "applied_migrations"):
            method = getattr(recorder, name)

            def trusted_call(*args, _method=method, **kwargs):
                with self.trusted():
                    return _method(*args, **kwargs)

            setattr(recorder, name, trusted_call)
        record = recorder.record_applied

        def record_applied(app, name):
            self.events.append(("record", app, name))
            with self.trusted():
                return record(app, name)

        # This recorder instance's method only.
        recorder.record_applied = record_applied  # type: ignore[method-assign]

    @contextmanager
    def recording(self, recorder: MigrationRecorder):
        self._wrap_recorder(recorder)
        wrapper = connections[connection.alias]
        # This connection's schema_editor only, while recording.
        wrapper.schema_editor = self._schema_editor(  # type: ignore[method-assign]
            type(wrapper).schema_editor.__get__(wrapper)
        )
        try:
            with wrapper.execute_wrapper(self._watch):
                yield
        finally:
            del wrapper.schema_editor


# ---------------------------------------------------------------------------------------------
# Migrating one schema (in the main process or in a worker)


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


def _replay_script(events: list[tuple]) -> str:
    """The leader's statements and migration records as one script: one round trip a schema."""
    statements = []
    for event in events:
        if event[0] == "sql":
            statements.append(event[1])
        else:
            statements.append(connection.ops.compose_sql(
                "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, clock_timestamp())",
                [event[1], event[2]],
            ))
    return ";\n".join(statements)


# Worker processes are forked after the groups are planned and get them (with their rendered
# states) as the pool initializer's argument: with the fork start method nothing is pickled, the
# child holds the parent's objects. A task names a group by index and a schema.
_worker_groups: list[_Group] = []  # set in a forked worker only, by _worker_init

_INHERITED_CONNECTIONS: list = []


def _worker_init(groups: list[_Group]) -> None:
    """Start a forked worker with the planned groups, on connections of its own.

    The parent closed the connections it can see, but Django keeps them per thread and per async
    context: after a fork the child may find one the parent could not close (one opened before
    an event loop ran in that thread, for instance), whose socket the parent still uses. The old
    ones stay referenced, never closed or collected (a worker ends with os._exit), so that no
    finalizer says goodbye to the server on the parent's behalf.
    """
    _worker_groups[:] = groups
    # ConnectionHandler._connections is private (docs/migrations.md lists it).
    _INHERITED_CONNECTIONS.append(connections._connections)  # type: ignore[attr-defined]
    connections._connections = Local(connections.thread_critical)  # type: ignore[attr-defined]


def _migrate_task(groups: list[_Group], group_index: int, target: SchemaTarget) -> SchemaResult:
    group = groups[group_index]
    try:
        if group.runtime is None:
            group.runtime = _GroupRuntime(group)
        return migrate_schema(group.runtime, target, replay=group.replay_sql)
    except Exception as exc:
        return SchemaResult(target.name, target.kind, "failed", error=_error_text(exc))


def _worker_chunk(chunk: list[tuple[int, SchemaTarget]]) -> list[SchemaResult]:
    return [_migrate_task(_worker_groups, index, target) for index, target in chunk]


# ---------------------------------------------------------------------------------------------
# The run


def _register_management_receivers() -> None:
    # As migrate does: apps' management modules connect their pre/post_migrate receivers.
    for app_config in global_apps.get_app_configs():
        if module_has_submodule(app_config.module, "management"):
            import_module(".management", app_config.name)


def _check_graph() -> None:
    if has_multi_type_tenants():
        raise SchemaMigrationError(
            "Multi-type tenants are not supported by this migrate_schemas; run django-tenants' own "
            "with --executor standard."
        )
    loader = MigrationLoader(None)
    conflicts = loader.detect_conflicts()
    if conflicts:
        names = "; ".join(f"{', '.join(n)} in {app}" for app, n in conflicts.items())
        raise SchemaMigrationError(
            f"Conflicting migrations detected ({names}); run 'manage.py makemigrations --merge'."
        )


def public_schema_migrate(*, verbosity: int, stdout) -> list[str] | None:
    """Bring the public schema up to date with Django's migrate; None when it already was."""
    public = get_public_schema_name()
    fingerprint = schema_fingerprints([public]).get(public)
    if fingerprint == expected_migration_fingerprint():
        return None
    applied_before = _applied_in(public)
    if fingerprint is not None and not _GroupRuntime(_Group(fingerprint, applied_before, [])).plan:
        return None  # only extra rows (squashed or removed migrations): nothing to apply
    connection.set_schema_to_public()
    MigrationRecorder(connection).ensure_schema()
    migrate_command = get_tenant_base_migrate_command_class()()
    call_command(migrate_command, interactive=False, verbosity=verbosity, skip_checks=True, stdout=stdout)
    connection.set_schema_to_public()
    return sorted(f"{a}.{n}" for a, n in _applied_in(public) - applied_before)


def _plan_groups(targets: list[SchemaTarget], report: MigrateReport) -> list[_Group]:
    expected = expected_migration_fingerprint()
    fingerprints = schema_fingerprints([t.name for t in targets])
    by_key: dict[str | None, list[SchemaTarget]] = {}
    for target in targets:
        key = fingerprints.get(target.name)
        if key == expected:
            report.current += 1
        else:
            by_key.setdefault(key, []).append(target)
    groups = []
    for key, schemas in by_key.items():
        leader = schemas[0].name
        group = _Group(key, _applied_in(leader), schemas)
        # Django's own history check, on the group's first schema.
        connection.set_schema(leader, include_public=False)
        try:
            _GivenStateLoader(group.applied).check_consistent_history(connection)
        except Exception as exc:
            group.error = _error_text(exc)
        finally:
            connection.set_schema_to_public()
        groups.append(group)
    return groups


def schemas_pending(*, schema_name: str | None = None, include_public: bool = True,
                    include_tenants: bool = True) -> list[PendingSchema]:
    """Which schemas are behind the code's migrations and what each misses; changes nothing."""
    _check_graph()
    pending = []
    public = get_public_schema_name()
    if include_public and schema_name in (None, public):
        key = schema_fingerprints([public]).get(public)
        if key != expected_migration_fingerprint():
            runtime = _GroupRuntime(_Group(key, _applied_in(public), []))
            if runtime.plan_keys:
                pending.append(PendingSchema(public, "public", runtime.plan_keys))
    if include_tenants and schema_name != public:
        report = MigrateReport()
        for group in _plan_groups(migration_targets(schema_name=schema_name), report):
            keys = _GroupRuntime(group).plan_keys
            if keys:
                pending.extend(PendingSchema(t.name, t.kind, keys) for t in group.schemas)
    return pending


def schemas_migrate(
    *,
    actor: Actor,
    schema_name: str | None = None,
    include_public: bool = True,
    include_tenants: bool = True,
    workers: int = 1,
    verbosity: int = 1,
    stdout=None,
    on_result: Callable[[int, int, SchemaResult], None] | None = None,
) -> MigrateReport:
    """Migrate the public schema, then every tenant and ready spare schema (or just one)."""
    if workers < 1:
        raise SchemaMigrationError(f"--workers must be at least 1 (got {workers}).")
    started = time.perf_counter()
    report = MigrateReport(workers=1)
    _register_management_receivers()
    _check_graph()
    public = get_public_schema_name()
    if include_public and schema_name in (None, public):
        report.public_checked = True
        report.public_applied = public_schema_migrate(verbosity=verbosity, stdout=stdout) or []
    if include_tenants and schema_name != public:
        targets = migration_targets(schema_name=schema_name)
        report.checked = len(targets)
        groups = _plan_groups(targets, report)
        _run_groups(groups, report, workers=workers, on_result=on_result)
        if report.migrated and not connection.in_atomic_block:
            _flush_commits()
    report.seconds = time.perf_counter() - started
    _audit(report, actor)
    return report


_Finish = Callable[[SchemaResult], None]


def _run_groups(groups: list[_Group], report: MigrateReport, *, workers: int, on_result) -> None:
    """Plan each group and migrate its leader here, then the other schemas (forked workers)."""
    total = sum(len(g.schemas) for g in groups)
    done = 0

    def finish(result: SchemaResult) -> None:
        nonlocal done
        done += 1
        report.results.append(result)
        if on_result:
            on_result(done, total, result)

    tasks = _prepare_groups(groups, report, finish)
    _collect(groups, tasks, report, finish, workers=workers)


def _prepare_groups(
    groups: list[_Group], report: MigrateReport, finish: _Finish
) -> list[tuple[int, SchemaTarget]]:
    """First half, in this process: each group's runtime, its replay decision and its leader.

    Returns the schemas left to migrate as (group index, schema) tasks.
    """
    tasks: list[tuple[int, SchemaTarget]] = []
    for index, group in enumerate(groups):
        if group.error:
            for target in group.schemas:
                finish(SchemaResult(target.name, target.kind, "failed", error=group.error))
            continue
        connection.set_schema(group.schemas[0].name)
        try:
            group.runtime = _GroupRuntime(group)
            group.runtime.pre_state()  # emits pre_migrate, which may add operations to the plan
            group.blocker = _replay_blocker(group.runtime.plan)
        finally:
            connection.set_schema_to_public()
        runtime = group.runtime
        if not runtime.plan:
            # Behind only by rows for migrations that are gone or squashed: nothing to apply.
            for target in group.schemas:
                finish(SchemaResult(target.name, target.kind, "current", note="nothing to apply"))
            continue
        rest = list(group.schemas)
        failed_leaders = 0
        if group.key is None and not group.blocker:
            group.blocker = "schemas without a migration table yet"
        while not group.blocker and group.replay_sql is None and len(rest) > 1:
            if failed_leaders == MAX_LEADERS:
                group.blocker = f"the first {MAX_LEADERS} schemas failed"
                break
            recorder = _SqlRecorder()
            result = migrate_schema(runtime, rest.pop(0), recorder=recorder)
            finish(result)
            if result.status == "failed":
                failed_leaders += 1
            elif result.status == "migrated" and recorder.foreign:
                group.blocker = f"its SQL depends on the schema ({recorder.foreign[0][:80]})"
            elif result.status == "migrated":
                group.replay_sql = _replay_script(recorder.events)
        how = "replaying the SQL recorded on its first schema" if group.replay_sql is not None else (
            f"Django's executor per schema ({group.blocker or 'a single schema'})"
        )
        report.groups.append(f"{', '.join(runtime.plan_keys)} for {len(group.schemas)} schema(s): {how}")
        tasks.extend((index, target) for target in rest)
    return tasks


def _collect(groups: list[_Group], tasks: list[tuple[int, SchemaTarget]], report: MigrateReport,
             finish: _Finish, *, workers: int) -> None:
    """Second half: migrate the tasks here, or in forked workers, and collect their results."""
    if not tasks:
        return
    use_workers = min(workers, len(tasks))
    forkable = "fork" in multiprocessing.get_all_start_methods()
    if use_workers <= 1 or not forkable or connection.in_atomic_block:
        for index, target in tasks:
            finish(_migrate_task(groups, index, target))
        return
    report.workers = use_workers
    # Children must open their own connections; never share a socket across a fork.
    connections.close_all()

    size = max(1, min(16, len(tasks) // (use_workers * 8)))
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    # A pool that notices a dead worker (OOM kill...): its schemas are reported, never awaited.
    pool = ProcessPoolExecutor(
        use_workers, mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init, initargs=(groups,),
    )
    futures = {pool.submit(_worker_chunk, chunk): chunk for chunk in chunks}
    try:
        for future in as_completed(futures):
            try:
                results = future.result()
            except BrokenProcessPool:
                error = "a worker process died while migrating it; run migrate_schemas again"
                results = [SchemaResult(t.name, t.kind, "failed", error=error) for _, t in futures[future]]
            for result in results:
                finish(result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown()


def _audit(report: MigrateReport, actor: Actor) -> None:
    tenant_results = [r for r in report.results if r.kind == "tenant" and r.status in ("migrated", "failed")]
    if not report.public_applied and not tenant_results:
        return  # nothing changed, or only spare schemas (not tenants) were built or refreshed
    connection.set_schema_to_public()
    audit_record(
        actor=actor,
        action=Action.SCHEMAS_MIGRATION_FAILED if report.failed else Action.SCHEMAS_MIGRATED,
        target=f"{len(report.migrated)} schema(s)",
        details={
            "public": report.public_applied,
            "migrated": len(report.migrated),
            "failed": {r.schema: r.error for r in report.failed[:50]},
            "plans": report.groups[:20],
            "seconds": round(report.seconds, 3),
        },
    )
