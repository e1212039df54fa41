"""What a fully migrated tenant schema's django_migrations table holds, and checks against it."""

import hashlib
from functools import cache

from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import quote_schema_name

from core.db import connection


@cache
def expected_migration_keys() -> tuple[str, ...]:
    """Every migration on disk, as ``app.name``, sorted bytewise (matches COLLATE "C")."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return tuple(sorted(f"{app}.{name}" for app, name in loader.graph.nodes))


@cache
def expected_migration_fingerprint() -> str:
    return hashlib.md5(",".join(expected_migration_keys()).encode()).hexdigest()


def fingerprint_sql(schema_name: str) -> str:
    return (
        "SELECT md5(coalesce(string_agg(app || '.' || name, ',' "
        'ORDER BY app COLLATE "C", name COLLATE "C"), \'\')) '
        f"FROM {quote_schema_name(schema_name)}.django_migrations"
    )


def schema_migration_fingerprint(schema_name: str) -> str | None:
    """The fingerprint of what is applied in one schema, or None if it has no migration table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{quote_schema_name(schema_name)}.django_migrations"]
        )
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(fingerprint_sql(schema_name))
        return cursor.fetchone()[0]


def schema_is_current(schema_name: str) -> bool:
    return schema_migration_fingerprint(schema_name) == expected_migration_fingerprint()
