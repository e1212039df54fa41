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

The modules: targets (the schemas, their fingerprints, the result
types), planning (loader, plan and runtime per group; whether replay is safe), recording (the
leader's SQL and the replay script), per_schema (one schema's transaction, executor or guarded
replay), workers (the forked processes) and run (the whole run, what the command calls).
"""

from tenants.schema_migrations.per_schema import LOCK_CLASS, migrate_schema
from tenants.schema_migrations.run import (
    MAX_LEADERS,
    _plan_groups,
    _run_groups,
    public_schema_migrate,
    schemas_migrate,
    schemas_pending,
)
from tenants.schema_migrations.targets import (
    MIGRATED_STATUSES,
    SCAN_BATCH,
    MigrateReport,
    PendingSchema,
    SchemaMigrationError,
    SchemaResult,
    SchemaTarget,
    migration_targets,
    schema_fingerprints,
)

__all__ = [
    "LOCK_CLASS",
    "MAX_LEADERS",
    "MIGRATED_STATUSES",
    "SCAN_BATCH",
    "MigrateReport",
    "PendingSchema",
    "SchemaMigrationError",
    "SchemaResult",
    "SchemaTarget",
    "_plan_groups",
    "_run_groups",
    "migrate_schema",
    "migration_targets",
    "public_schema_migrate",
    "schema_fingerprints",
    "schemas_migrate",
    "schemas_pending",
]
