"""The run: the public schema, then planning the groups, their leaders, the workers, the audit.

schemas_migrate and schemas_pending (what the command calls), public_schema_migrate, grouping the
targets by fingerprint (_plan_groups) and each group's replay decision and leader
(_prepare_groups) before the remaining schemas go to the workers (workers._collect).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import import_module

from django.apps import apps as global_apps
from django.core.management import call_command
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils.module_loading import module_has_submodule
from django_tenants.utils import (
    get_public_schema_name,
    get_tenant_base_migrate_command_class,
    has_multi_type_tenants,
)

from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.migration_state import expected_migration_fingerprint
from tenants.schema_migrations.per_schema import _error_text, _flush_commits, migrate_schema
from tenants.schema_migrations.planning import _GivenStateLoader, _Group, _GroupRuntime, _replay_blocker
from tenants.schema_migrations.recording import _replay_script, _SqlRecorder
from tenants.schema_migrations.targets import (
    MigrateReport,
    PendingSchema,
    SchemaMigrationError,
    SchemaResult,
    SchemaTarget,
    _applied_in,
    migration_targets,
    schema_fingerprints,
)
from tenants.schema_migrations.workers import _collect, _Finish

# A leader that fails may fail because of its own data; try a few others before giving up replay.
MAX_LEADERS = 3


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
