"""Planning once per group of schemas at the same state, with Django's own loader and executor.

The loader and executor subclasses, whether a plan's SQL may be replayed on other schemas
(_replay_blocker), which apps Django's post_migrate receivers need to hear (_post_migrate_scope),
and a group (_Group) with its per-process runtime (_GroupRuntime: loader, plan, rendered states).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps as global_apps
from django.core.management.sql import emit_pre_migrate_signal
from django.db import router
from django.db.migrations import operations as ops
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ProjectState, StateApps
from django.db.models.signals import post_migrate

from core.db import connection
from tenants.schema_migrations.recording import _SqlRecorder
from tenants.schema_migrations.targets import SchemaTarget


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
