"""Building spare schemas without running migrations: capture once, replay many times.

Migrating a fresh schema takes about 0.4 s here, almost all of it Django (loader, planner,
rendered states, post_migrate), very little of it PostgreSQL. So, once per migration state:

1. capture: a schema is migrated for real (our ``migrate_schemas``) while the schema editor's
   statements are recorded, in order; then the rows the migrations left (content types,
   permissions, the migration records, whatever a data migration wrote) and the sequences'
   positions are read back. The script names no schema: every statement ran, and is replayed,
   with the search_path on the schema being built (a script that contains the schema's name
   is refused, as it would build into that schema). The DDL replayed is, first choice, each
   table made in its final shape from the migrations' model state (``_state_ddl``), a fifth
   cheaper than the history of ALTERs; the recorded statements when that is not the same;
2. check: the script is replayed into a second schema and the two are compared catalog to
   catalog and row to row (``tenants.schema_catalog``); any difference (a migration that
   made DDL through a raw cursor, say) refuses the capture, and spares are then migrated;
3. the script is stored under a key made of the migrations and their source, Django's version
   and the server's: a new or edited migration, or an upgrade, means a new capture.

A replay is one message inside the caller's transaction: ``CREATE SCHEMA``, the search_path set
on it, a check that it is, the script, the pool entry. Several spares can share a transaction.
"""

import hashlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import django
from django.apps import apps as django_apps
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django_tenants.utils import get_public_schema_name, quote_schema_name

from core.db import connection
from tenants.errors import TenantError
from tenants.migration_state import expected_migration_fingerprint, expected_migration_keys
from tenants.models import SchemaPoolEntry, SchemaTemplate
from tenants.schema_catalog import catalog_differences, schema_catalog

logger = logging.getLogger(__name__)

# The only names a replay builds into: what pool_schema_build and pool_fill generate.
SPARE_NAME = re.compile(r"_pool_[0-9a-f]{20}")


class SchemaTemplateError(TenantError):
    """The migrations' result cannot be captured as a replayable script (the reason says why)."""


@dataclass(frozen=True)
class Template:
    key: str
    script: str
    statements: int


def template_key() -> str:
    """The migration state a script belongs to: every migration's name and source, Django's and
    the server's versions. Recomputed when the code's migrations change (their fingerprint or the
    packages they come from)."""
    return _template_key(expected_migration_fingerprint(), repr(sorted(settings.MIGRATION_MODULES.items())))


@cache
def _template_key(fingerprint: str, migration_modules: str) -> str:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    digest = hashlib.sha256(f"django {django.get_version()}\n{fingerprint}\n".encode())
    for app, name in sorted(loader.disk_migrations):
        module = sys.modules.get(type(loader.disk_migrations[app, name]).__module__)
        path = getattr(module, "__file__", None)
        digest.update(f"{app}.{name}\n".encode())
        if path:
            with open(path, "rb") as source:
                digest.update(hashlib.sha256(source.read()).digest())
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        digest.update(f"postgres {cursor.fetchone()[0]}".encode())
    return digest.hexdigest()


_loaded: dict[str, Template] = {}


def template_current() -> Template | None:
    """The stored script for the code's migrations, or None when there is none yet."""
    key = template_key()
    if key in _loaded:
        return _loaded[key]
    row = SchemaTemplate.objects.filter(key=key, refused="").values_list("script", "statements").first()
    if row is None:
        return None
    _loaded[key] = Template(key, row[0], row[1])
    return _loaded[key]


def replay_sql(schema_name: str, template: Template, *, register: bool = True) -> str:
    """The SQL that builds ``schema_name`` from the template, for one message in a transaction.

    With ``register`` the spare's ready pool entry is inserted too.
    """
    if not SPARE_NAME.fullmatch(schema_name):
        raise SchemaTemplateError(
            f"Refusing to replay into {schema_name!r}: only new spare schemas (_pool_ and 20 hex "
            "digits) are built this way."
        )
    quoted, public = quote_schema_name(schema_name), quote_schema_name(get_public_schema_name())
    literal = connection.ops.compose_sql("%s", [schema_name])
    return (
        f"CREATE SCHEMA {quoted};\n"
        f"SET LOCAL search_path = {quoted}, {public};\n"
        # The script's unqualified names must land in the new schema, never in public.
        f"DO $replay_guard$ BEGIN IF current_schema() IS DISTINCT FROM {literal} THEN "
        "RAISE EXCEPTION 'schema replay: search_path is not on the new schema'; END IF; "
        "END $replay_guard$;\n"
        f"{template.script};\n"
        + (
            f"INSERT INTO {public}.{SchemaPoolEntry._meta.db_table} (schema_name, status, created_at) "
            f"VALUES ({literal}, '{SchemaPoolEntry.Status.READY}', now());\n"
            if register else ""
        )
    )


def replay_spares(schema_names: list[str], template: Template, *, register: bool = True) -> None:
    """Build spares from the template, all in one transaction and one round trip.

    Inside a caller's transaction they are part of it (and, without ``register``, no one else
    can ever see them as spares: provisioning builds its own this way when the pool is empty).
    """
    script = "".join(replay_sql(n, template, register=register) for n in schema_names)
    if not connection.in_atomic_block:
        # Its own transaction: spares need not wait for the disk. A crash loses whole spares
        # (entry and schema), never half of one. Never for a caller's transaction (a shop's).
        script = "SET LOCAL synchronous_commit = off;\n" + script
    with transaction.atomic():
        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            cursor.execute(script, None)
        # SET LOCAL ends with the transaction; until then, back to the public schema.
        connection.set_schema_to_public()


# ---------------------------------------------------------------------------------------------
# Capture


@contextmanager
def _recording() -> Iterator[list[str]]:
    """Every statement the schema editor runs on this connection, with its parameters inlined."""
    statements: list[str] = []
    wrapper = connections[connection.alias]
    original = type(wrapper).schema_editor.__get__(wrapper)

    def schema_editor(*args, **kwargs):
        editor = original(*args, **kwargs)
        editor_execute = editor.execute

        def execute(sql, params=()):
            text = str(sql) if params is None else connection.ops.compose_sql(str(sql), params)
            statements.append(text.strip().rstrip(";"))
            return editor_execute(sql, params)

        editor.execute = execute
        return editor

    wrapper.schema_editor = schema_editor  # type: ignore[method-assign]  # this connection only
    try:
        yield statements
    finally:
        del wrapper.schema_editor


class _Probed(Exception):
    pass


def _tables_filled_by(template: Template) -> set[str]:
    """Tables that replaying the DDL alone leaves rows in (RunSQL inserts, CREATE TABLE AS ...).

    Replayed into a probe schema in a transaction that is rolled back.
    """
    probe = _new_spare_name()
    filled: set[str] = set()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(replay_sql(probe, template), None)
                connection.set_schema_to_public()
                cursor.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind = 'r'",
                    [probe],
                )
                for (table,) in cursor.fetchall():
                    cursor.execute(
                        f"SELECT EXISTS (SELECT 1 FROM {quote_schema_name(probe)}.{quote_schema_name(table)})"
                    )
                    if cursor.fetchone()[0]:
                        filled.add(table)
            raise _Probed
    except _Probed:
        pass
    finally:
        connection.set_schema_to_public()
    return filled


def _data_script(schema_name: str, *, filled: set[str]) -> list[str]:
    """The rows the migrations left, parents first, and the sequences' positions.

    Tables the DDL itself filled (``filled``) are emptied first, so that each ends with exactly
    the captured rows. User triggers are off while rows are copied: in the capture they already
    had their say, and the rows they wrote are among those copied.
    """
    quoted = quote_schema_name(schema_name)
    statements: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.oid, c.relname,
                   array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attgenerated = ''),
                   coalesce((SELECT array_agg(DISTINCT k.confrelid) FROM pg_constraint k
                              WHERE k.conrelid = c.oid AND k.contype = 'f'
                                AND k.confrelid <> c.oid), '{}')
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE n.nspname = %s AND c.relkind = 'r'
             GROUP BY c.oid, c.relname
            """,
            [schema_name],
        )
        tables = {oid: (name, columns, parents) for oid, name, columns, parents in cursor.fetchall()}
        cursor.execute(
            "SELECT c.oid, t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal "
            "ORDER BY t.tgname",
            [schema_name],
        )
        triggers: dict[int, list[tuple[str, str]]] = {}
        for oid, trigger, state in cursor.fetchall():
            triggers.setdefault(oid, []).append((trigger, state))
        order = _parents_first(tables)
        rows: dict[int, str] = {}
        for oid in order:
            source = f"{quoted}.{quote_schema_name(tables[oid][0])}"
            cursor.execute(f"SELECT json_agg(t ORDER BY t.ctid)::text FROM {source} t")
            found = cursor.fetchone()[0]
            if found is not None:
                rows[oid] = found
        touched = [oid for oid in order if oid in rows or tables[oid][0] in filled]
        statements += [
            f"ALTER TABLE {quote_schema_name(tables[oid][0])} DISABLE TRIGGER USER"
            for oid in touched if triggers.get(oid)
        ]
        statements += [
            f"DELETE FROM {quote_schema_name(tables[oid][0])}"
            for oid in reversed(order) if tables[oid][0] in filled
        ]
        for oid in order:
            if oid not in rows:
                continue
            name, columns, _ = tables[oid]
            table = quote_schema_name(name)
            names = ", ".join(quote_schema_name(c) for c in columns)
            values = names
            if name == "django_migrations":
                # When each was applied: now, for the schema being built.
                values = ", ".join(
                    "clock_timestamp()" if c == "applied" else quote_schema_name(c) for c in columns
                )
            statements.append(connection.ops.compose_sql(
                f"INSERT INTO {table} ({names}) OVERRIDING SYSTEM VALUE SELECT {values} "
                f"FROM json_populate_recordset(NULL::{table}, %s)",
                [rows[oid]],
            ))
        how = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}
        statements += [
            f"ALTER TABLE {quote_schema_name(tables[oid][0])} {how[state]} "
            f"TRIGGER {quote_schema_name(trigger)}"
            for oid in touched for trigger, state in triggers.get(oid, []) if state in how
        ]
        cursor.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = %s ORDER BY sequencename",
            [schema_name],
        )
        for (sequence,) in cursor.fetchall():
            cursor.execute(f"SELECT last_value, is_called FROM {quoted}.{quote_schema_name(sequence)}")
            last_value, is_called = cursor.fetchone()
            statements.append(connection.ops.compose_sql(
                "SELECT setval(%s::regclass, %s, %s)", [quote_schema_name(sequence), last_value, is_called]
            ))
    return statements


def _parents_first(tables: dict[int, tuple[str, list[str], list[int]]]) -> list[int]:
    ordered: list[int] = []
    seen: set[int] = set()

    def visit(oid: int, path: frozenset[int]) -> None:
        if oid in seen or oid in path or oid not in tables:
            return  # a cycle is left to deferrable constraints
        for parent in tables[oid][2]:
            visit(parent, path | {oid})
        seen.add(oid)
        ordered.append(oid)

    for oid in sorted(tables, key=lambda o: tables[o][0]):
        visit(oid, frozenset())
    return ordered


def _new_spare_name() -> str:
    import uuid

    return f"_pool_{uuid.uuid4().hex[:20]}"


def _drop(schema_name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(schema_name)} CASCADE")


def template_capture() -> tuple[Template | None, list[str]]:
    """Capture the script of the code's migrations; return it and the spares made on the way.

    The migrated schema ends as a ready spare, and so does the checked replay when the script
    passes. When the migrations cannot be replayed the refusal is stored (spares are then
    migrated until the migrations change) and (None, [the migrated spare]) is returned. On any
    other failure nothing is left behind and the error is raised.
    """
    key = template_key()
    connection.set_schema_to_public()
    source, check = _new_spare_name(), _new_spare_name()
    entry = SchemaPoolEntry.objects.create(schema_name=source)
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote_schema_name(source)}")
        with _recording() as ddl:
            call_command("migrate_schemas", schema_name=source, interactive=False, verbosity=0)
        connection.set_schema_to_public()
        try:
            _check_names(source, ddl)
            try:
                filled = _tables_filled_by(Template(key, ";\n".join(ddl), len(ddl)))
            except DatabaseError as exc:
                raise SchemaTemplateError(f"replaying the captured SQL failed: {exc}") from exc
            data = _data_script(source, filled=filled)
            try:
                state = _state_ddl()
                template = Template(key, ";\n".join(state + data), len(state))
                _check_and_store(source, check, entry, template)
            except (SchemaTemplateError, ValueError, LookupError) as exc:
                # Migrations that do more than their models say (functions, views, triggers made
                # by RunSQL): their own statements then, in the order they ran.
                logger.info("Spares replay the migrations' statements as recorded: %s", exc)
                template = Template(key, ";\n".join(ddl + data), len(ddl))
                _check_and_store(source, check, entry, template)
        except SchemaTemplateError as refusal:
            logger.warning("Spares will be migrated, not replayed: %s", refusal)
            with transaction.atomic():
                _store(Template(key, "", len(ddl)), refused=str(refusal))
                entry.status = SchemaPoolEntry.Status.READY
                entry.save(update_fields=["status"])
            return None, [source]
    except BaseException:
        _drop(source)
        SchemaPoolEntry.objects.filter(schema_name=source).delete()
        raise
    finally:
        connection.set_schema_to_public()
    _loaded[key] = template
    logger.info("Captured the schema template %s in %.0f ms (%d DDL statements)",
                key[:12], (time.perf_counter() - started) * 1000, template.statements)
    return template, [source, check]


def _state_ddl() -> list[str]:
    """The tenant apps' tables built straight from the migrations' final model state: each
    CREATE TABLE with its columns as they end up, then the constraints and indexes, instead of
    every ALTER on the way there. About a fifth less work a spare than the recorded statements;
    the check replay proves it builds the same schema, or the recorded statements are used."""
    state = MigrationLoader(None, ignore_no_migrations=True).project_state()
    labels = {config.label for config in django_apps.get_app_configs() if config.name in settings.TENANT_APPS}
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        editor.create_model(MigrationRecorder.Migration)
        for model in state.apps.get_models():
            meta = model._meta
            if meta.app_label in labels and meta.managed and not meta.proxy and not meta.swapped:
                editor.create_model(model)  # with its automatic many-to-many tables
    return [statement.strip().rstrip(";") for statement in editor.collected_sql]


def _check_and_store(source: str, check: str, entry: SchemaPoolEntry, template: Template) -> None:
    """Store ``template`` once a replay of it has matched the migrated schema; the check replay
    stays uncommitted until then, and is a ready spare after."""
    try:
        with transaction.atomic():
            _check(source, check, template)
            _store(template, refused="")
            entry.status = SchemaPoolEntry.Status.READY
            entry.save(update_fields=["status"])
    except DatabaseError as exc:
        connection.set_schema_to_public()
        raise SchemaTemplateError(f"replaying the captured SQL failed: {exc}") from exc


def _check_names(source: str, ddl: list[str]) -> None:
    found = next((statement for statement in ddl if source in statement), None)
    if found is not None:
        raise SchemaTemplateError(
            f"the migrations' SQL names the schema it ran in ({found[:120]!r}), so it cannot be "
            "replayed into another schema"
        )


def _check(source: str, check: str, template: Template) -> None:
    if source in template.script:  # the rows name it
        raise SchemaTemplateError("the migrations' rows name the schema they were made in")
    replay_spares([check], template)
    differences = catalog_differences(schema_catalog(source), schema_catalog(check))
    if differences:
        raise SchemaTemplateError(
            "replaying the captured migrations does not rebuild the schema they made (a migration "
            "that runs DDL outside the schema editor?); first differences: " + "; ".join(differences[:5])
        )


def _store(template: Template, *, refused: str) -> None:
    # A few older states stay: while a deploy rolls, old and new code both build spares.
    older = SchemaTemplate.objects.exclude(key=template.key).order_by("-created_at")
    SchemaTemplate.objects.filter(pk__in=list(older.values_list("pk", flat=True)[2:])).delete()
    SchemaTemplate.objects.get_or_create(
        key=template.key,
        defaults={"script": template.script, "statements": template.statements, "refused": refused,
                  "migrations": len(expected_migration_keys())},
    )


def template_refused() -> str:
    """Why the code's migrations cannot be replayed ('' when they can, or were never tried)."""
    return SchemaTemplate.objects.filter(key=template_key()).values_list("refused", flat=True).first() or ""
