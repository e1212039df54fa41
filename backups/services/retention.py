"""Retention: which backups and exports to keep, pruning the rest, and a deleted shop's erasure.

A tenant's backups are kept per its plan (hourly/daily/weekly/monthly buckets, newest always);
a deprovisioned tenant's, final backup included, are erased after BACKUP_FINAL_RETENTION_DAYS.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from backups.models import Backup, Export
from backups.services import runs  # a module: see jobs.py on the import cycle
from backups.services._common import manifest_key
from backups.storage import backup_storage
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Tenant


@dataclass
class PrunePlan:
    keep: list[Backup]
    delete: list[tuple[Backup, str]]
    exports: list[tuple[Export, str]] = field(default_factory=list)


def _buckets(when: datetime) -> dict[str, str]:
    year, week, _ = when.isocalendar()
    return {
        "hourly": when.strftime("%Y%m%d%H"),
        "daily": when.strftime("%Y%m%d"),
        "weekly": f"{year}W{week:02d}",
        "monthly": when.strftime("%Y%m"),
    }


def retention_keep(backups: list[Backup], policy: dict[str, int]) -> set[uuid.UUID]:
    """Ids to keep: the newest backup of each of the last N hours/days/weeks/months that have one.

    ``backups`` are the finished backups of one tenant (or kind), newest first. The newest is
    always kept, whatever the policy.
    """
    keep = {backups[0].pk} if backups else set()
    for period, count in policy.items():
        seen: set[str] = set()
        for backup in backups:
            if len(seen) >= count:
                break
            bucket = _buckets(backup.created_at)[period]
            if bucket not in seen:
                seen.add(bucket)
                keep.add(backup.pk)
    return keep


def retention_policy(tenant: Tenant | None) -> dict[str, int]:
    if tenant is None:
        daily, hourly = settings.BACKUP_KEEP_PLATFORM_DAILY, 0
    else:
        daily = tenant.plan.backup_retention_days
        hourly = settings.BACKUP_KEEP_HOURLY if tenant.plan.backup_frequency == "hourly" else 0
    return {
        "hourly": hourly,
        "daily": daily,
        "weekly": settings.BACKUP_KEEP_WEEKLY,
        "monthly": settings.BACKUP_KEEP_MONTHLY,
    }


def prune_plan(*, now: datetime | None = None) -> PrunePlan:
    now = now or timezone.now()
    plan = PrunePlan(keep=[], delete=[])
    finished = (Backup.Status.VERIFIED, Backup.Status.UPLOADED)
    expired = Backup.objects.filter(expires_at__lte=now).exclude(status__in=Backup.ACTIVE_STATUSES)
    plan.delete += [(b, "erased: tenant deprovisioned and its retention ended") for b in expired]
    gone = {b.pk for b, _ in plan.delete}
    stale_failed = Backup.objects.filter(status=Backup.Status.FAILED, created_at__lt=now - timedelta(days=7))
    plan.delete += [(b, "failed more than 7 days ago") for b in stale_failed.exclude(pk__in=gone)]
    groups: dict[tuple[str, uuid.UUID | None], list[Backup]] = {}
    candidates = (
        Backup.objects.filter(status__in=finished, expires_at__isnull=True)
        .select_related("tenant__plan")
        .order_by("-created_at")
    )
    for backup in candidates:
        if backup.tenant is not None and backup.tenant.status == Tenant.Status.DELETED:
            continue  # kept until their erasure date
        groups.setdefault((backup.kind, backup.tenant_id), []).append(backup)
    for (_, _), backups in groups.items():
        keep = retention_keep(backups, retention_policy(backups[0].tenant))
        for backup in backups:
            if backup.pk in keep:
                plan.keep.append(backup)
            else:
                plan.delete.append((backup, "beyond retention"))
    # Exports: a copy of a shop's data, kept only until it expires; failed ones hold no object.
    expired_exports = Export.objects.filter(status=Export.Status.READY, expires_at__lte=now)
    plan.exports += [(e, "expired") for e in expired_exports]
    old_failed = Export.objects.filter(status=Export.Status.FAILED, created_at__lt=now - timedelta(days=7))
    plan.exports += [(e, "failed more than 7 days ago") for e in old_failed]
    return plan


def backup_delete(*, backup: Backup, reason: str, actor: Actor) -> None:
    storage = backup_storage()
    if backup.location and backup.storage == storage.name:
        storage.delete(backup.location)
        storage.delete(manifest_key(backup))
    action = Action.BACKUP_ERASED if backup.expires_at else Action.BACKUP_PRUNED
    audit_record(
        actor=actor,
        action=action,
        tenant=backup.tenant,
        target=str(backup.pk),
        details={
            "reason": reason,
            "tenant": backup.tenant_label,
            "location": backup.location,
            "created_at": backup.created_at.isoformat(),
        },
    )
    backup.delete()


def export_delete(*, export: Export, reason: str, actor: Actor) -> None:
    storage = backup_storage()
    if export.location and export.storage == storage.name and export.status == Export.Status.READY:
        storage.delete(export.location)
    audit_record(
        actor=actor,
        action=Action.EXPORT_DELETED,
        tenant=export.tenant,
        target=str(export.pk),
        details={"reason": reason, "tenant": export.tenant_label, "location": export.location},
    )
    export.delete()


def backup_prune(*, dry_run: bool, actor: Actor, now: datetime | None = None) -> PrunePlan:
    connection.set_schema_to_public()
    plan = prune_plan(now=now)
    if not dry_run:
        for backup, reason in plan.delete:
            backup_delete(backup=backup, reason=reason, actor=actor)
        for export, reason in plan.exports:
            export_delete(export=export, reason=reason, actor=actor)
    return plan


def backup_before_erasure(*, tenant: Tenant, actor: Actor) -> Backup:
    """Deprovisioning hook: a final backup, and every backup of the tenant set to expire.

    Prune deletes them (final backup included) after BACKUP_FINAL_RETENTION_DAYS: the erasure.
    Raises if the final backup fails, so the caller drops nothing.
    """
    final = runs.backup_tenant_now(tenant=tenant, actor=actor, purpose=Backup.Purpose.FINAL)
    expires = timezone.now() + timedelta(days=settings.BACKUP_FINAL_RETENTION_DAYS)
    Backup.objects.filter(tenant=tenant).update(expires_at=expires)
    audit_record(
        actor=actor,
        action=Action.BACKUP_ERASURE_SCHEDULED,
        tenant=tenant,
        target=tenant.subdomain,
        details={"final_backup": str(final.pk), "erase_after": expires.isoformat()},
    )
    return final
