"""Read-side queries about backups. No side effects."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from backups.errors import BackupError
from backups.models import Backup, RestoreDrill
from core.admin_links import admin_path
from core.db import connection
from core.facts import BackupFact, BackupSizeDay, DrillFact
from tenants.models import Plan, Tenant

FIRST_BACKUP_SLACK_SECONDS = 300
FREQUENCY_SECONDS: dict[str, int] = {
    Plan.BackupFrequency.HOURLY: 3600,
    Plan.BackupFrequency.DAILY: 86400,
    Plan.BackupFrequency.WEEKLY: 7 * 86400,
}


def backup_get(backup_id: uuid.UUID | str) -> Backup:
    """The backup with this id, or a BackupError that says where to find ids."""
    try:
        uuid.UUID(str(backup_id))
    except ValueError:
        raise BackupError(
            f"{backup_id!r} is not a backup id (ids look like 3f2c...; see list_backups)."
        ) from None
    backup = Backup.objects.select_related("tenant").filter(pk=backup_id).first()
    if backup is None:
        raise BackupError(f"No backup with id {backup_id} (see list_backups).")
    return backup


def backups_list(*, tenant: Tenant | None = None, limit: int = 50) -> QuerySet[Backup]:
    qs = Backup.objects.select_related("tenant")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    return qs.order_by("-created_at")[:limit]


def rpo_seconds(plan: Plan) -> int:
    return FREQUENCY_SECONDS.get(plan.backup_frequency, 3600)


def last_verified_at(tenant: Tenant) -> datetime | None:
    return Backup.objects.filter(tenant=tenant, status=Backup.Status.VERIFIED).aggregate(
        last=Max("finished_at")
    )["last"]


def rpo_breached(tenant: Tenant, *, now: datetime | None = None) -> bool:
    """True when the newest verified backup is older than the plan's backup interval."""
    last = last_verified_at(tenant)
    now = now or timezone.now()
    return last is None or now - last > timedelta(seconds=rpo_seconds(tenant.plan))


def tenants_due(*, now: datetime | None = None) -> list[Tenant]:
    """Active tenants whose staggered slot in the current backup window has passed without a backup.

    Each tenant gets a fixed offset within its plan's interval (from its id), so thousands of
    tenants spread evenly over the hour instead of all starting at :00.
    """
    now = now or timezone.now()
    epoch = now.timestamp()
    tenants = (
        Tenant.objects.filter(status=Tenant.Status.ACTIVE)
        .select_related("plan")
        .annotate(
            last_backup=Max("backups__created_at", filter=~Q(backups__status=Backup.Status.FAILED)),
            busy=Max("backups__created_at", filter=Q(backups__status__in=Backup.ACTIVE_STATUSES)),
        )
    )
    due: list[Tenant] = []
    for tenant in tenants:
        if tenant.busy is not None:
            continue
        period = rpo_seconds(tenant.plan)
        offset = tenant.pk.int % period
        window_start = ((epoch - offset) // period) * period + offset
        if tenant.last_backup is None:
            # Never backed up (new tenant, first deploy): wait for its own slot so they do not all
            # start on the first tick; a few minutes of slack covers a missed tick.
            if epoch - window_start < FIRST_BACKUP_SLACK_SECONDS:
                due.append(tenant)
        elif tenant.last_backup.timestamp() < window_start:
            due.append(tenant)
    return due


@dataclass(frozen=True)
class PitrStatus:
    configured: bool
    summary: str


def pitr_status() -> PitrStatus:
    """Point-in-time recovery of the database layer: WAL archiving seen on the server, or as configured."""
    if settings.BACKUP_PITR_DESCRIPTION:
        return PitrStatus(True, settings.BACKUP_PITR_DESCRIPTION)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('archive_mode'), archived_count, last_archived_time, "
            "failed_count, last_failed_time FROM pg_stat_archiver"
        )
        mode, archived, last_ok, failed, last_failed = cursor.fetchone()
    if mode == "off":
        return PitrStatus(False, "Not configured: WAL archiving is off (see docs/backups.md, PITR).")
    summary = f"WAL archiving {mode}: {archived} segments archived, last at {last_ok or 'never'}"
    if failed:
        summary += f"; {failed} failures, last at {last_failed}"
    return PitrStatus(True, summary)


def backup_facts() -> list[BackupFact]:
    """Each active tenant's newest verified backup and its RPO, for the monitoring rules."""
    # One index probe per tenant (backups_verified_latest), not an aggregate over every backup row;
    # plain tuples, since /metrics and the RPO rule read this for every active tenant.
    newest = Backup.objects.filter(
        tenant=OuterRef("pk"), status=Backup.Status.VERIFIED, finished_at__isnull=False
    ).order_by("-finished_at")
    rows = (
        Tenant.objects.filter(status=Tenant.Status.ACTIVE)
        .annotate(last=Subquery(newest.values("finished_at")[:1]))
        .values_list("pk", "plan__backup_frequency", "last", "activated_at")
    )
    listed = admin_path(Backup, "changelist")
    return [
        BackupFact(
            str(pk),
            last,
            timedelta(seconds=FREQUENCY_SECONDS.get(frequency, 3600)),
            link=f"{listed}?tenant__id__exact={pk}",
            active_since=activated,
        )
        for pk, frequency, last, activated in rows
    ]


def drill_facts() -> list[DrillFact]:
    """The latest finished restore drill per backup scope, for the monitoring rules."""
    latest: dict[str, DrillFact] = {}
    for drill in RestoreDrill.objects.filter(finished_at__isnull=False).select_related("backup")[:500]:
        key = drill.backup.schema_name or drill.backup.kind if drill.backup else drill.backup_label
        if key not in latest:  # newest first (Meta.ordering)
            assert drill.finished_at is not None  # filtered on finished_at__isnull=False
            latest[key] = DrillFact(
                key, drill.finished_at, drill.passed, detail=drill.reason,
                tenant_id=str(drill.backup.tenant_id) if drill.backup and drill.backup.tenant_id else None,
                link=admin_path(drill),
            )
    return list(latest.values())


def backup_sizes_by_day(since: datetime) -> list[BackupSizeDay]:
    """Verified backups created since `since`, per day (UTC) and kind: how many, their total and
    largest size. Only what retention kept is counted. For the monitoring dashboard's chart."""
    rows = (
        Backup.objects.filter(status=Backup.Status.VERIFIED, created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "kind")
        .annotate(count=Count("pk"), total=Sum("size_bytes"), largest=Max("size_bytes"))
        .order_by("day", "kind")
    )
    return [
        BackupSizeDay(r["day"], r["kind"], r["count"], r["total"] or 0, r["largest"] or 0) for r in rows
    ]
