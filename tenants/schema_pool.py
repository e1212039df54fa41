"""A warm pool of spare, fully migrated schemas.

Provisioning renames one of them into the new tenant's schema inside the same transaction that
creates the tenant's rows, so a new shop is ready in milliseconds and a failure leaves nothing
behind (PostgreSQL DDL is transactional). An empty pool falls back to building a schema on the
spot, under a pool name first, so that path is just as crash-safe.

Spares are built by replaying the script captured from a migrated schema
(``tenants.schema_template``), several per transaction, and by running the migrations only when
replay is off (``TENANT_SCHEMA_POOL_REPLAY``) or the migrations cannot be replayed.
"""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import quote_schema_name

from core.db import connection
from tenants.migration_state import schema_is_current
from tenants.models import SchemaPoolEntry
from tenants.schema_template import replay_spares, template_capture, template_current, template_refused

logger = logging.getLogger(__name__)

POOL_PREFIX = "_pool_"
# A build that has not finished in this time was interrupted (killed worker, crashed host).
STALE_BUILD_AFTER = timedelta(minutes=15)


def _drop_schema(schema_name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(schema_name)} CASCADE")


def _spare_name() -> str:
    return f"{POOL_PREFIX}{uuid.uuid4().hex[:20]}"


def pool_schema_build() -> str:
    """Build one ready spare schema; return its name. Leaves nothing behind on failure."""
    return pool_spares_build(count=1)[0]


def pool_spares_build(*, count: int, batch: int | None = None) -> list[str]:
    """Build ``count`` ready spares (a capture may add one more); return their names.

    By replay, ``batch`` spares per transaction (default TENANT_SCHEMA_POOL_REFILL_BATCH), when
    replay is on and the migrations allow it; otherwise one migrated schema at a time.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    batch = batch or settings.TENANT_SCHEMA_POOL_REFILL_BATCH
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    connection.set_schema_to_public()
    if not settings.TENANT_SCHEMA_POOL_REPLAY:
        return [pool_schema_migrate() for _ in range(count)]
    template = template_current()
    built: list[str] = []
    if template is None:
        if template_refused():
            return [pool_schema_migrate() for _ in range(count)]
        template, built = template_capture()
        if template is None:
            return built + [pool_schema_migrate() for _ in range(count - len(built))]
    while len(built) < count:
        names = [_spare_name() for _ in range(min(batch, count - len(built)))]
        replay_spares(names, template)
        built += names
    return built


def pool_schema_migrate() -> str:
    """Create one spare schema and run the migrations in it (the path replay replaces)."""
    schema_name = _spare_name()
    connection.set_schema_to_public()
    entry = SchemaPoolEntry.objects.create(schema_name=schema_name)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote_schema_name(schema_name)}")
        call_command("migrate_schemas", schema_name=schema_name, interactive=False, verbosity=0)
    except BaseException:
        connection.set_schema_to_public()
        _drop_schema(schema_name)
        entry.delete()
        raise
    finally:
        connection.set_schema_to_public()
    entry.status = SchemaPoolEntry.Status.READY
    entry.save(update_fields=["status"])
    return schema_name


def pool_spare_build_claimed() -> str | None:
    """A spare replayed inside the caller's transaction and so already theirs (no pool entry).

    For provisioning that finds the pool empty: a spare built and committed first could be
    claimed by someone else before its builder gets to it (a burst). None when spares are not
    built by replay yet (no capture, or replay off or refused): the caller builds one then.
    """
    assert connection.in_atomic_block, "pool_spare_build_claimed() must run inside transaction.atomic()"
    if not settings.TENANT_SCHEMA_POOL_REPLAY:
        return None
    template = template_current()
    if template is None:
        return None
    name = _spare_name()
    replay_spares([name], template, register=False)
    return name


def pool_claim() -> str | None:
    """Take one ready, current spare schema. Must run inside the caller's transaction."""
    assert connection.in_atomic_block, "pool_claim() must run inside transaction.atomic()"
    candidates = SchemaPoolEntry.objects.select_for_update(skip_locked=True).filter(
        status=SchemaPoolEntry.Status.READY
    )
    for entry in candidates[:3]:
        # Check the schema itself, not a recorded flag: it must match the code's migrations.
        if schema_is_current(entry.schema_name):
            entry.delete()
            return entry.schema_name
        logger.warning("Spare schema %s is behind the code's migrations; skipping it", entry.schema_name)
    return None


def pool_reap() -> int:
    """Drop interrupted builds, stale spares, and spare schemas that lost their entry."""
    connection.set_schema_to_public()
    dropped = 0
    cutoff = timezone.now() - STALE_BUILD_AFTER
    stale = list(
        SchemaPoolEntry.objects.filter(status=SchemaPoolEntry.Status.BUILDING, created_at__lt=cutoff)
    )
    stale += [
        e
        for e in SchemaPoolEntry.objects.filter(status=SchemaPoolEntry.Status.READY)
        if not schema_is_current(e.schema_name)
    ]
    for entry in stale:
        _drop_schema(entry.schema_name)
        entry.delete()
        dropped += 1
    known = set(SchemaPoolEntry.objects.values_list("schema_name", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [POOL_PREFIX]
        )
        orphans = [name for (name,) in cursor.fetchall() if name not in known]
    for name in orphans:
        _drop_schema(name)
        dropped += 1
    return dropped


def pool_ready_count() -> int:
    connection.set_schema_to_public()
    return SchemaPoolEntry.objects.filter(status=SchemaPoolEntry.Status.READY).count()


def pool_fill(*, size: int, batch: int | None = None, max_rounds: int = 1) -> int:
    """Top the pool up to ``size`` ready schemas; return how many were built.

    With ``max_rounds`` > 1 it counts again after each top-up and goes on while spares were
    claimed meanwhile (a burst of signups), at most that many times.
    """
    if size < 0:
        raise ValueError(f"size must be 0 or more (got {size})")
    pool_reap()
    built = 0
    for _ in range(max(1, max_rounds)):
        missing = size - pool_ready_count()
        if missing <= 0:
            break
        built += len(pool_spares_build(count=missing, batch=batch))
    return built

