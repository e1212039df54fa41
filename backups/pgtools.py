"""pg_dump / pg_restore plumbing: matching binaries, connection settings, scratch databases."""

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
from django.conf import settings
from psycopg import sql

from backups.errors import BackupError
from core.db import connection


def database_params(dbname: str | None = None) -> dict[str, str]:
    """Host, port, user, password, database of the direct connection used for dumps."""
    if settings.BACKUP_DATABASE_URL:
        url = urlparse(settings.BACKUP_DATABASE_URL)
        params = {
            "host": url.hostname or "127.0.0.1",
            "port": str(url.port or 5432),
            "user": unquote(url.username or "postgres"),
            "password": unquote(url.password or ""),
            "dbname": url.path.lstrip("/"),
        }
    else:
        s = connection.settings_dict
        params = {
            "host": s["HOST"] or "127.0.0.1",
            "port": str(s["PORT"] or 5432),
            "user": s["USER"] or "postgres",
            "password": s["PASSWORD"] or "",
            "dbname": s["NAME"],
        }
    if dbname:
        params["dbname"] = dbname
    return params


def pg_env(params: dict[str, str]) -> dict[str, str]:
    # Credentials go through the environment, never the command line (visible in ps).
    env = dict(
        os.environ,
        PGHOST=params["host"],
        PGPORT=params["port"],
        PGUSER=params["user"],
        PGDATABASE=params["dbname"],
        PGAPPNAME="platform-backups",
        # pg_dump reads whole catalogs (thousands of tenant tables); JIT-compiling those queries
        # made a small tenant's dump ~10% slower (docs/benchmarks.md) and changes no result.
        PGOPTIONS=f"{os.environ.get('PGOPTIONS', '')} -c jit=off".strip(),
    )
    if params["password"]:
        env["PGPASSWORD"] = params["password"]
    return env


def connect(dbname: str | None = None, **kwargs: Any) -> psycopg.Connection:
    p = database_params(dbname)
    return psycopg.connect(
        host=p["host"],
        port=p["port"],
        user=p["user"],
        password=p["password"] or None,
        dbname=p["dbname"],
        **kwargs,
    )


@cache
def server_major() -> int:
    with connect() as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None  # SHOW returns one row
        return int(row[0]) // 10000


def _binary_major(path: str) -> int:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    if not match:
        raise BackupError(f"Cannot read the version of {path} ({out.strip()!r}).")
    return int(match.group(1))


@cache
def pg_binary(name: str) -> str:
    """pg_dump/pg_restore/psql of the server's major version, or a clear error saying what to install."""
    major = server_major()
    candidates = []
    if settings.BACKUP_PG_BIN_DIR:
        candidates.append(str(Path(settings.BACKUP_PG_BIN_DIR) / name))
    else:
        candidates += [f"/usr/lib/postgresql/{major}/bin/{name}", shutil.which(name) or ""]
    for path in filter(None, candidates):
        if not os.access(path, os.X_OK):
            continue
        found = _binary_major(path)
        if found == major:
            return path
        raise BackupError(
            f"{path} is PostgreSQL {found} but the server is PostgreSQL {major}; install "
            f"postgresql-client-{major} or point BACKUP_PG_BIN_DIR at its bin folder."
        )
    raise BackupError(
        f"{name} not found (looked in {', '.join(filter(None, candidates))}); install "
        f"postgresql-client-{major} or set BACKUP_PG_BIN_DIR."
    )


# Whether a schema has anything --no-comments / --no-privileges would leave out, read in the
# dump's own snapshot. Comments: the schema's own, or any on a user object (oid >=
# FirstNormalObjectId) anywhere, which is cheap to ask; privileges: the schema's, its relations',
# columns', functions', types' and its default privileges. With neither, the flags spare pg_dump
# two whole-catalog reads and change nothing in the dump.
SCHEMA_EXTRAS_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_description WHERE objoid >= 16384
               OR (objoid = %(s)s::regnamespace AND classoid = 'pg_namespace'::regclass)),
  EXISTS (SELECT 1 FROM pg_namespace WHERE oid = %(s)s::regnamespace AND nspacl IS NOT NULL)
  OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = %(s)s::regnamespace AND (c.relacl IS NOT NULL
     OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL)))
  OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = %(s)s::regnamespace AND proacl IS NOT NULL)
  OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = %(s)s::regnamespace AND typacl IS NOT NULL)
  OR EXISTS (SELECT 1 FROM pg_default_acl WHERE defaclnamespace = %(s)s::regnamespace)
"""


def schema_dump_options(conn: psycopg.Connection, schema: str) -> list[str]:
    """pg_dump flags that leave nothing of ``schema`` out, as seen in ``conn``'s snapshot."""
    row = conn.execute(SCHEMA_EXTRAS_SQL, {"s": quote_ident(schema)}).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    comments, privileges = row
    flags = (("--no-comments", comments), ("--no-privileges", privileges))
    return [flag for flag, found in flags if not found]


def quote_ident(name: str) -> str:
    """A schema name as regnamespace reads it (quoted, so case and odd characters survive)."""
    return '"' + name.replace('"', '""') + '"'


# Tables whose rows no dump carries (their definitions are kept): live session keys would let
# whoever holds a backup or a restored copy act as any logged-in user, staff included.
EXCLUDED_TABLE_DATA = ("django_session",)


def dump_command(
    *,
    schema: str | None,
    snapshot: str | None = None,
    dbname: str | None = None,
    exclude_schemas: tuple[str, ...] = (),
    options: list[str] | tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    params = database_params(dbname)
    cmd = [pg_binary("pg_dump"), "--format=custom", "--no-password", *options]
    # "*.<table>": that table in every schema the dump holds (a tenant's, public, or all of them).
    cmd += [f"--exclude-table-data=*.{table}" for table in EXCLUDED_TABLE_DATA]
    if schema:
        cmd.append(f"--schema={schema}")
    for pattern in exclude_schemas:
        cmd.append(f"--exclude-schema={pattern}")
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd, pg_env(params)


def restore_command(*, dbname: str, single_transaction: bool = True) -> tuple[list[str], dict[str, str]]:
    params = database_params(dbname)
    cmd = [pg_binary("pg_restore"), "--no-password", "--no-owner", "--exit-on-error", f"--dbname={dbname}"]
    if single_transaction:
        cmd.append("--single-transaction")
    return cmd, pg_env(params)


def sessions_clear(dbname: str | None = None) -> int:
    """Empty every schema's session table in ``dbname``; returns the rows deleted.

    Restores call it on what they restored: backups taken before sessions were left out of
    dumps still carry them. One statement per schema in autocommit, so a database of thousands of
    shops never holds thousands of locks at once.
    """
    deleted = 0
    with connect(dbname, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') ORDER BY 1, 2",
            [list(EXCLUDED_TABLE_DATA)],
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("DELETE FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            cur = conn.execute(query)
            deleted += max(cur.rowcount, 0)
    return deleted


def set_password_links_void(dbname: str | None = None) -> int:
    """Void every set-password (reset) link in ``dbname``; returns the users touched.

    Those links are Django reset tokens, which hash each user's password and last_login: setting
    last_login to now voids every link made before, while passwords (and so logins) stay as
    restored. Whole-database restores call it on every schema, as tenant restores do on theirs.
    """
    touched = 0
    with connect(dbname, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'auth_user' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).fetchall()
        for (schema,) in schemas:
            query = sql.SQL("UPDATE {}.auth_user SET last_login = now()").format(sql.Identifier(schema))
            touched += max(conn.execute(query).rowcount, 0)
    return touched


def stderr_tail(data: bytes) -> str:
    return data.decode(errors="replace").strip()[-1500:]


def scratch_prefix() -> str:
    """Scratch databases carry our database's name, so runs on a shared server never mix them up."""
    return f"scratch_{database_params()['dbname'][:30]}_"


def database_create(name: str, *, without_public: bool = False) -> None:
    """CREATE DATABASE from template0 on our server.

    ``without_public``: for dumps of the public schema alone, which create it themselves.
    """
    with connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    if without_public:
        try:
            with connect(name, autocommit=True) as conn:
                conn.execute("DROP SCHEMA public")
        except BaseException:
            database_drop(name)
            raise


def database_drop(name: str) -> None:
    with connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(label: str = "restore", *, without_public: bool = False) -> Iterator[str]:
    """A throwaway database on the same server, dropped afterwards whatever happens."""
    name = f"{scratch_prefix()}{label}_{uuid.uuid4().hex[:12]}"
    database_create(name, without_public=without_public)
    try:
        yield name
    finally:
        database_drop(name)
