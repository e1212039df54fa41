"""Finding the schemas to migrate and what they miss; the types a run reports with.

The targets (tenant schemas and ready spares), each schema's migration fingerprint in one query a
batch, the applied migrations of one schema, and SchemaTarget, SchemaResult, PendingSchema and
MigrateReport.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.migrations.recorder import MigrationRecorder
from django_tenants.utils import get_public_schema_name, quote_schema_name

from core.db import connection
from tenants.migration_state import fingerprint_sql
from tenants.models import SchemaPoolEntry, Tenant

# Schemas compared per fingerprint query: each one touches a table, and PostgreSQL keeps a lock
# per table until the query ends; 200 stays far below max_locks_per_transaction * connections.
SCAN_BATCH = 200
# Tenants whose schema is kept in step; a deleted tenant's kept schema is left as it was.
MIGRATED_STATUSES = tuple(s for s in Tenant.Status.values if s != Tenant.Status.DELETED)


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
