"""What a backup holds, read inside the same snapshot that pg_dump dumps."""

import hashlib
from collections.abc import Callable

import psycopg
from psycopg import sql

Connect = Callable[[], psycopg.Connection]

SYSTEM_SCHEMAS_SQL = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"


def schema_tables(conn: psycopg.Connection, schemas: list[str] | None) -> dict[str, list[str]]:
    where = "n.nspname = ANY(%s)" if schemas is not None else SYSTEM_SCHEMAS_SQL
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {where} ORDER BY 1, 2",
        [schemas] if schemas is not None else None,
    ).fetchall()
    found: dict[str, list[str]] = {s: [] for s in schemas or []}
    for schema, table in rows:
        found.setdefault(schema, []).append(table)
    return found


COUNTS_PER_STATEMENT = 200


def row_counts(conn: psycopg.Connection, tables: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Rows of every table, counted by a few UNION ALL statements rather than a round trip each."""
    counts: dict[str, dict[str, int]] = {schema: dict.fromkeys(names, 0) for schema, names in tables.items()}
    parts = [
        sql.SQL("SELECT {}::text, {}::text, count(*) FROM {}.{}").format(
            sql.Literal(schema), sql.Literal(table), sql.Identifier(schema), sql.Identifier(table)
        )
        for schema, names in tables.items()
        for table in names
    ]
    for start in range(0, len(parts), COUNTS_PER_STATEMENT):
        query = sql.SQL(" UNION ALL ").join(parts[start : start + COUNTS_PER_STATEMENT])
        for schema, table, rows in conn.execute(query).fetchall():
            counts[schema][table] = rows
    return counts


def migration_state(conn: psycopg.Connection, tables: dict[str, list[str]]) -> dict[str, dict]:
    """Per schema: applied migrations (app.name, sorted bytewise) and their md5 fingerprint."""
    state = {}
    for schema, names in tables.items():
        if "django_migrations" not in names:
            continue
        keys = [
            f"{app}.{name}"
            for app, name in conn.execute(
                sql.SQL(
                    'SELECT app, name FROM {}.django_migrations ORDER BY app COLLATE "C", name COLLATE "C"'
                ).format(sql.Identifier(schema))
            ).fetchall()
        ]
        state[schema] = {
            "applied": keys,
            "fingerprint": hashlib.md5(",".join(keys).encode()).hexdigest(),
        }
    return state


def read_contents(conn: psycopg.Connection, schemas: list[str] | None) -> dict:
    tables = schema_tables(conn, schemas)
    return {"tables": row_counts(conn, tables), "migrations": migration_state(conn, tables)}


SCHEMAS_PER_TRANSACTION = 50


def read_contents_in_snapshot(
    snapshot_conn: psycopg.Connection, snapshot: str, schemas: list[str] | None, connect: Connect
) -> dict:
    """Like read_contents, in the exported ``snapshot``, a batch of schemas per transaction.

    Every count takes a lock held to the end of its transaction; a whole database of thousands of
    tables in one transaction would run out of lock slots (max_locks_per_transaction) next to
    pg_dump's own locks. Each batch imports the same snapshot, so all counts still see one instant.
    """
    if schemas is not None and len(schemas) <= SCHEMAS_PER_TRANSACTION:
        return read_contents(snapshot_conn, schemas)  # few locks: no second connection needed
    return _read_in_batches(schema_tables(snapshot_conn, schemas), connect, snapshot)


def read_contents_batched(connect: Connect, schemas: list[str] | None) -> dict:
    """read_contents of a database nobody writes to (a fresh restore), a batch of schemas per transaction."""
    with connect() as conn:
        tables = schema_tables(conn, schemas)
    return _read_in_batches(tables, connect, None)


def _read_in_batches(tables: dict[str, list[str]], connect: Connect, snapshot: str | None) -> dict:
    names = list(tables)
    contents: dict = {"tables": {}, "migrations": {}}
    with connect() as conn:
        for start in range(0, max(len(names), 1), SCHEMAS_PER_TRANSACTION):
            batch = {name: tables[name] for name in names[start : start + SCHEMAS_PER_TRANSACTION]}
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if snapshot:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            contents["tables"].update(row_counts(conn, batch))
            contents["migrations"].update(migration_state(conn, batch))
            conn.rollback()
    return contents


def compare_counts(expected: dict[str, dict[str, int]], found: dict[str, dict[str, int]]) -> list[str]:
    """Differences between two {schema: {table: rows}} maps, as sentences; empty when equal."""
    problems = []
    for schema, tables in expected.items():
        for table, rows in tables.items():
            got = found.get(schema, {}).get(table)
            if got != rows:
                problems.append(f"{schema}.{table}: manifest {rows} rows, restored {got}")
    for schema, tables in found.items():
        for table in tables.keys() - expected.get(schema, {}).keys():
            problems.append(f"{schema}.{table}: restored but not in the manifest")
    return problems
