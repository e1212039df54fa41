"""Recording the leader's SQL and turning it into the script the group's other schemas replay.

_SqlRecorder wraps the schema editor and the migration recorder while Django's executor migrates
the group's first schema, and flags any other query (the SQL would then depend on the schema);
_replay_script joins the recorded statements and migration records into one script.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from django.db import connections
from django.db.migrations.recorder import MigrationRecorder

from core.db import connection

_TRANSACTION_CONTROL = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)


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
