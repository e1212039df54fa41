"""A warm pool of spare schemas kept across the tests of a session (of each xdist worker).

Production keeps spare, fully migrated schemas ready (``tenants.schema_pool``) and provisioning
renames one into the new shop's schema. Tests used to start from an empty pool, so every shop a
test made was migrated on the spot (~0.4 s) and then dropped. Now:

- at the start of the session one spare is built by the real builder
  (``pool_schema_build``: CREATE SCHEMA + our ``migrate_schemas``) and kept as a template;
- further spares are copies of it, made from a ``pg_dump`` of the template with the schema name
  swapped (~20x faster than migrating). The first copy is checked object by object against the
  template (both dumped again, names swapped: the texts must be equal), and ``pool_claim`` itself
  still checks every spare it takes against the code's migrations;
- before each database test the pool is topped up to ``WARM_POOL_SIZE`` ready spares, through a
  connection of its own so that the spares are committed whatever the test's transaction does;
- after a transactional test only the shops' schemas are dropped: unclaimed, current spares stay.

Provisioning in tests therefore takes the production path (claim a spare, rename it). Tests that
are about the empty pool or count schemas carry ``@pytest.mark.empty_pool``: the spares are
dropped before them and the pool is rebuilt after them.
"""

import re
import subprocess
import uuid

import psycopg
from psycopg import sql

from platform_site import devservices

# More than TENANT_SCHEMA_POOL_SIZE (5) plus what one test claims, so that the refill job queued
# by each provisioning usually finds the pool full, as it mostly does in production.
WARM_POOL_SIZE = 8
POOL_PREFIX = "_pool_"
SPARE_NAME = re.compile(r"_pool_[0-9a-f]{20}")  # what pool_schema_build and _copy name them


class WarmPool:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.template_sql: str | None = None
        self.template_name: str | None = None

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True)

    # -- session start -------------------------------------------------------------------------

    def start(self) -> None:
        """Build the template spare with the production builder, then fill the pool."""
        from tenants.schema_pool import pool_schema_build

        with self.connect() as conn:
            self._drop_pool(conn)
        self.template_name = pool_schema_build()
        self.template_sql = self._dump(self.template_name).replace(self.template_name, "{schema}")
        with self.connect() as conn:
            first = self._copy(conn)
        # The copy must be the template object for object, data included.
        copy_dump = self._dump(first).replace(first, "{schema}")
        assert copy_dump == self.template_sql, "a copied spare differs from a migrated one"
        self.top_up()

    def _dump(self, schema: str) -> str:
        result = subprocess.run(
            [devservices.postgres_bin("pg_dump"), "--schema", schema, "--inserts", "--no-owner",
             "--no-privileges", "--no-comments", "--dbname", self.database_url],
            capture_output=True, text=True, check=True,
        )
        lines = []
        for line in result.stdout.splitlines():
            # psql meta-commands (\restrict) and session settings (search_path!) are not ours to run.
            if line.startswith("\\") or line.startswith("SET ") or "set_config(" in line:
                continue
            lines.append(line)
        return "\n".join(lines)

    # -- spares ------------------------------------------------------------------------------------

    def _copy(self, conn: psycopg.Connection) -> str:
        name = f"{POOL_PREFIX}{uuid.uuid4().hex[:20]}"
        with conn.transaction():
            conn.execute(self.template_sql.replace("{schema}", name).encode())
            conn.execute(
                "INSERT INTO tenants_schemapoolentry (schema_name, status, created_at) "
                "VALUES (%s, 'ready', now())",
                [name],
            )
        return name

    def _pool_schemas(self, conn: psycopg.Connection) -> list[str]:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY nspname",
            [POOL_PREFIX],
        ).fetchall()
        return [name for (name,) in rows]

    def top_up(self) -> None:
        """Register surviving spares (a transactional test's flush empties the entry table) and
        copy new ones until the pool holds WARM_POOL_SIZE."""
        with self.connect() as conn:
            present = set(self._pool_schemas(conn))
            entries = {
                name: status
                for name, status in conn.execute(
                    "SELECT schema_name, status FROM tenants_schemapoolentry"
                ).fetchall()
            }
            stale = [name for name in entries if name not in present]
            if stale:
                conn.execute("DELETE FROM tenants_schemapoolentry WHERE schema_name = ANY(%s)", [stale])
            missing = sorted(present - set(entries))
            for name in missing:
                conn.execute(
                    "INSERT INTO tenants_schemapoolentry (schema_name, status, created_at) "
                    "VALUES (%s, 'ready', now())",
                    [name],
                )
            ready = sum(1 for name in present if entries.get(name, "ready") == "ready")
            for _ in range(WARM_POOL_SIZE - ready):
                self._copy(conn)

    def empty(self) -> None:
        """No spares at all, as on a fresh installation (for the tests about that)."""
        with self.connect() as conn:
            self._drop_pool(conn)

    def _drop_pool(self, conn: psycopg.Connection) -> None:
        for name in self._pool_schemas(conn):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        conn.execute("DELETE FROM tenants_schemapoolentry")

    # -- after a transactional test ----------------------------------------------------------------

    def drop_all_but_spares(self, *, keep_spares: bool) -> None:
        """Drop every schema a test made; keep unclaimed spares that are still current.

        Runs on Django's connection, like the test did (a second connection could wait forever on
        a lock the test's connection still holds).
        """
        from django.db import DatabaseError, connection, transaction

        from tenants.migration_state import expected_migration_fingerprint, fingerprint_sql, schema_is_current

        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') "
                "AND nspname NOT LIKE 'pg\\_%'"
            )
            names = [name for (name,) in cursor.fetchall()]
            spares = [name for name in names if keep_spares and SPARE_NAME.fullmatch(name)]
            current: set[str] = set()
            if spares:
                # One query for all of them; a spare without a migration table sends us one by one.
                union = " UNION ALL ".join(f"SELECT '{name}', ({fingerprint_sql(name)})" for name in spares)
                try:
                    with transaction.atomic():
                        cursor.execute(union)
                        expected = expected_migration_fingerprint()
                        current = {name for name, fingerprint in cursor.fetchall() if fingerprint == expected}
                except DatabaseError:
                    current = {name for name in spares if schema_is_current(name)}
            for name in names:
                if name not in current:
                    cursor.execute(f'DROP SCHEMA "{name}" CASCADE')
