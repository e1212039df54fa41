"""Off-site copies: every verified dump and export copied to a second store in another region.

- ``offsite_copy_queue``: called when a backup is verified or an export is ready; records a queued
  copy and enqueues its job on the ``backups`` queue (a no-op when no second store is configured).
- ``offsite_copy_run``: streams the object from the primary store into a multipart upload in the
  second store (one part in memory), hashing it on the way; copies the manifest beside it; then
  ``offsite_copy_verify`` reads the far copy back and compares its sha256 and size with the
  manifest. A failure is recorded with its reason and retried by the sweep with a backoff.
- ``offsite_sweep``: every minute, queue what has no copy yet, retry failed and corrupt copies
  whose backoff has passed, and requeue copies a dead worker left behind.
- ``offsite_prune``: the second store's own retention (longer than the primary's), and erasure of
  copies of deprovisioned shops and expired exports.
"""

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from backups import jobs  # it imports this module too: used at call time
from backups.errors import BackupError, BackupIntegrityError, BackupStateError, StorageError
from backups.models import Backup, Export, OffsiteCopy
from backups.offsite_storage import OffsiteS3Storage, offsite_configured, offsite_storage
from backups.services._common import error_reason, logger, manifest_key_for
from backups.services.integrity import checksum_check
from backups.storage import Store, backup_storage
from core.audit import Action, Actor, audit_record
from core.db import connection
from tenants.models import Tenant

MAX_BACKOFF = timedelta(hours=1)
# A copy still "copying" after this long lost its worker; one "queued" this long lost its job.
STALE_QUEUED = timedelta(minutes=15)
DEFAULT_REVERIFY_BATCH = 10
# New copies queued per sweep: a second store set up beside years of backups fills over a few
# minutes instead of one tick queuing everything (the oldest first).
SWEEP_BATCH = 500


def _backoff(attempts: int) -> timedelta:
    """1, 2, 4 ... minutes after each failure in a row, at most an hour: a region outage heals itself."""
    return min(timedelta(minutes=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _copy_defaults(*, backup: Backup | None, export: Export | None) -> dict:
    source = backup or export
    assert source is not None  # one of the two, checked by the caller
    return {
        "kind": backup.kind if backup is not None else OffsiteCopy.EXPORT,
        "tenant": source.tenant,
        "tenant_label": source.tenant_label,
        "source_created_at": source.created_at,
        "source_ready_at": source.finished_at or source.created_at,
        "location": source.location,
        "sha256": source.sha256,
        "size_bytes": source.size_bytes,
        "expires_at": source.expires_at,
    }


def offsite_copy_queue(
    *, backup: Backup | None = None, export: Export | None = None, actor: Actor, enqueue: bool = True
) -> OffsiteCopy | None:
    """Record a queued copy of a verified backup or a ready export and enqueue it.

    Returns None when no second store is configured (copies are off). A source that already has a
    copy is requeued only if that copy failed or is corrupt.
    """
    if (backup is None) == (export is None):
        raise BackupError("Copy one backup or one export at a time.")
    if not offsite_configured():
        return None
    if backup is not None and backup.status != Backup.Status.VERIFIED:
        raise BackupStateError(f"Backup {backup.pk} is {backup.status}; only verified backups are copied.")
    if export is not None and export.status != Export.Status.READY:
        raise BackupStateError(f"Export {export.pk} is {export.status}; only ready exports are copied.")
    connection.set_schema_to_public()
    lookup: dict[str, Backup | Export | None] = (
        {"backup": backup} if backup is not None else {"export": export}
    )
    try:
        with transaction.atomic():
            copy, created = OffsiteCopy.objects.select_for_update().get_or_create(
                **lookup, defaults=_copy_defaults(backup=backup, export=export)
            )
            if not created and copy.status not in (*OffsiteCopy.RETRYABLE, OffsiteCopy.Status.QUEUED):
                return copy
            if not created:
                copy.status, copy.queued_at = OffsiteCopy.Status.QUEUED, timezone.now()
                OffsiteCopy.objects.filter(pk=copy.pk).update(status=copy.status, queued_at=copy.queued_at)
            audit_record(
                actor=actor,
                action=Action.OFFSITE_COPY_QUEUED,
                tenant=copy.tenant,
                target=str(copy.pk),
                details={"location": copy.location, "attempts": copy.attempts},
            )
            if enqueue:
                jobs.offsite_copy_job.delay(str(copy.pk), *actor.job_args)
    except IntegrityError:
        return OffsiteCopy.objects.get(**lookup)  # queued by a concurrent call
    return copy


def _source_still_there(copy: OffsiteCopy) -> str | None:
    """Why the source can no longer be copied from the primary store, or None if it can."""
    if copy.backup_id is None and copy.export_id is None:
        return "its source was deleted from the primary store (retention or erasure)"
    if copy.backup is not None and copy.backup.status != Backup.Status.VERIFIED:
        return f"its backup is {copy.backup.status} in the primary store"
    if copy.export is not None and copy.export.status != Export.Status.READY:
        return f"its export is {copy.export.status} in the primary store"
    source = copy.backup or copy.export
    assert source is not None
    if source.storage != backup_storage().name:
        return f"it is stored in {source.storage!r} but BACKUP_STORAGE is {backup_storage().name!r}"
    return None


def offsite_copy_run(*, copy_id: str, actor: Actor) -> OffsiteCopy:
    """Copy one object to the second store and verify it there. Idempotent: a verified copy is left."""
    connection.set_schema_to_public()
    store = offsite_storage()
    with transaction.atomic():
        copy = (
            OffsiteCopy.objects.select_for_update(of=("self",))
            .select_related("backup", "export")
            .get(pk=copy_id)
        )
        if copy.status in (OffsiteCopy.Status.VERIFIED, OffsiteCopy.Status.COPYING):
            return copy  # done, or being made by another worker (a duplicate job)
        gone = _source_still_there(copy)
        copy.status, copy.started_at = OffsiteCopy.Status.COPYING, timezone.now()
        copy.store = store.describe()
        copy.save(update_fields=["status", "started_at", "store"])
    if gone is not None:
        return _copy_failed(copy, f"Cannot copy: {gone}.", actor, retry=False)
    started = time.monotonic()
    try:
        _stream_copy(copy, store)
        checksum = checksum_check(
            location=copy.location, sha256=copy.sha256, size_bytes=copy.size_bytes, store=store
        )
        if not checksum.ok:
            raise BackupIntegrityError(
                "Read back from the off-site store: " + checksum.mismatch("The copy will be made again.")
            )
    except Exception as exc:
        return _copy_failed(copy, error_reason(exc), actor, retry=True)
    now = timezone.now()
    copy.status, copy.status_reason, copy.attempts, copy.next_attempt_at = (
        OffsiteCopy.Status.VERIFIED,
        "",
        0,
        None,
    )
    copy.copied_at = copy.verified_at = now
    copy.duration_seconds = time.monotonic() - started
    copy.save()
    audit_record(
        actor=actor,
        action=Action.OFFSITE_COPIED,
        tenant=copy.tenant,
        target=str(copy.pk),
        details={
            "location": copy.location,
            "store": copy.store,
            "sha256": copy.sha256,
            "size": copy.size_bytes,
            "lag_seconds": round((now - copy.source_ready_at).total_seconds(), 1),
        },
    )
    return copy


def _stream_copy(copy: OffsiteCopy, store: OffsiteS3Storage) -> None:
    """Primary -> second store, one part in memory, the source's bytes checked against the manifest."""
    primary = backup_storage()
    if copy.size_bytes <= store.part_size:
        # A small object (most shops' dumps): one PUT instead of a multipart upload's three calls.
        data = bytearray()
        for chunk in primary.read_chunks(copy.location):
            data += chunk
            if len(data) > copy.size_bytes:
                break  # larger than its manifest says: refused below, memory stays bounded
        _require_source(copy, hashlib.sha256(data).hexdigest(), len(data))
        store.put_bytes(copy.location, bytes(data))
    else:
        _stream_large(copy, primary, store)
    if copy.backup_id is not None:
        # The manifest beside the dump: a restore from the second store alone needs nothing else.
        store.put_bytes(manifest_key_for(copy.location), primary.get_bytes(manifest_key_for(copy.location)))


def _require_source(copy: OffsiteCopy, sha256: str, size: int) -> None:
    if (sha256, size) != (copy.sha256, copy.size_bytes):
        raise BackupIntegrityError(
            f"The primary store's object has sha256 {sha256[:12]}... ({size} bytes), not "
            f"{copy.sha256[:12]}... ({copy.size_bytes} bytes) as its manifest says; it was not copied. "
            "Verify the backup (it is corrupt in the primary store) and take a new one."
        )


def _stream_large(copy: OffsiteCopy, primary: Store, store: OffsiteS3Storage) -> None:
    digest, size = hashlib.sha256(), 0
    writer = store.writer(copy.location)
    try:
        for chunk in primary.read_chunks(copy.location):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        _require_source(copy, digest.hexdigest(), size)
        writer.commit()
    except BaseException:
        try:
            writer.abort()
        except StorageError as exc:  # the bucket's lifecycle rule cleans up what we cannot
            logger.warning("Could not abort the off-site upload of %s: %s", copy.location, exc)
        raise


def _copy_failed(copy: OffsiteCopy, reason: str, actor: Actor, *, retry: bool) -> OffsiteCopy:
    attempts = copy.attempts + 1
    next_at = timezone.now() + _backoff(attempts) if retry else None
    OffsiteCopy.objects.filter(pk=copy.pk).update(
        status=OffsiteCopy.Status.FAILED,
        status_reason=reason[:2000],
        attempts=attempts,
        next_attempt_at=next_at,
    )
    copy.refresh_from_db()
    audit_record(
        actor=actor,
        action=Action.OFFSITE_COPY_FAILED,
        tenant=copy.tenant,
        target=str(copy.pk),
        details={"reason": reason[:500], "attempts": attempts, "retry_at": next_at and next_at.isoformat()},
    )
    return copy


def offsite_copy_verify(*, copy: OffsiteCopy, actor: Actor) -> OffsiteCopy:
    """Read a verified copy back from the second store; a mismatch marks it corrupt (the sweep recopies)."""
    store = offsite_storage()
    if copy.status != OffsiteCopy.Status.VERIFIED:
        raise BackupStateError(
            f"Off-site copy {copy.pk} is {copy.status}; only verified copies are checked again."
        )
    try:
        checksum = checksum_check(
            location=copy.location, sha256=copy.sha256, size_bytes=copy.size_bytes, store=store
        )
        problem = None if checksum.ok else checksum.mismatch("The copy is corrupt; it will be made again.")
    except StorageError as exc:
        if "missing" not in str(exc):
            raise  # the store is unreachable: nothing is known about the copy
        problem = f"{exc} The copy is gone; it will be made again."
    if problem is not None:
        OffsiteCopy.objects.filter(pk=copy.pk).update(
            status=OffsiteCopy.Status.CORRUPT, status_reason=problem[:2000], next_attempt_at=timezone.now()
        )
        copy.refresh_from_db()
        audit_record(
            actor=actor,
            action=Action.OFFSITE_CORRUPT,
            tenant=copy.tenant,
            target=str(copy.pk),
            details={"reason": problem[:500], "location": copy.location},
        )
        return copy
    copy.verified_at = timezone.now()
    OffsiteCopy.objects.filter(pk=copy.pk).update(verified_at=copy.verified_at)
    audit_record(
        actor=actor,
        action=Action.OFFSITE_VERIFIED,
        tenant=copy.tenant,
        target=str(copy.pk),
        details={"sha256": checksum.sha256, "size": checksum.size},
    )
    return copy


@dataclass(frozen=True)
class SweepResult:
    queued: int  # new copies
    retried: int  # failed or corrupt copies tried again
    requeued: int  # copies a dead worker or a lost job left behind


def offsite_sweep(*, actor: Actor, now: datetime | None = None) -> SweepResult:
    """Queue what has no copy yet, retry failures whose backoff has passed, requeue what was lost."""
    if not offsite_configured():
        return SweepResult(0, 0, 0)
    connection.set_schema_to_public()
    now = now or timezone.now()
    queued = retried = requeued = 0
    missing_backups = Backup.objects.filter(status=Backup.Status.VERIFIED, offsite_copies__isnull=True)
    for backup in missing_backups.select_related("tenant").order_by("finished_at")[:SWEEP_BATCH]:
        queued += offsite_copy_queue(backup=backup, actor=actor) is not None
    missing_exports = Export.objects.filter(status=Export.Status.READY, offsite_copies__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    for export in missing_exports.select_related("tenant").order_by("finished_at")[:SWEEP_BATCH]:
        queued += offsite_copy_queue(export=export, actor=actor) is not None
    due = OffsiteCopy.objects.filter(status__in=OffsiteCopy.RETRYABLE, next_attempt_at__lte=now)
    for copy in due.select_related("backup", "export"):
        if copy.backup is not None or copy.export is not None:
            offsite_copy_queue(backup=copy.backup, export=copy.export, actor=actor)
            retried += 1
    # Lost jobs (Redis flushed, a job dropped): enqueued again; a duplicate of a job still waiting
    # behind a long burst finds its copy done (or being made) and returns.
    lost = OffsiteCopy.objects.filter(status=OffsiteCopy.Status.QUEUED, queued_at__lt=now - STALE_QUEUED)
    for copy in lost:
        OffsiteCopy.objects.filter(pk=copy.pk).update(queued_at=now)
        jobs.offsite_copy_job.delay(str(copy.pk), *actor.job_args)
        requeued += 1
    stale_copying = OffsiteCopy.objects.filter(
        status=OffsiteCopy.Status.COPYING,
        started_at__lt=now - timedelta(seconds=settings.BACKUP_STALE_AFTER_SECONDS),
    )
    for copy in stale_copying:
        _copy_failed(copy, "The worker stopped mid-copy; it will be tried again.", actor, retry=True)
        requeued += 1
    return SweepResult(queued, retried, requeued)


def offsite_reverify(*, actor: Actor, batch: int = DEFAULT_REVERIFY_BATCH) -> list[OffsiteCopy]:
    """Read back the copies checked longest ago (a daily trickle catches silent corruption)."""
    if not offsite_configured():
        return []
    connection.set_schema_to_public()
    oldest = OffsiteCopy.objects.filter(status=OffsiteCopy.Status.VERIFIED).order_by("verified_at")[:batch]
    return [offsite_copy_verify(copy=copy, actor=actor) for copy in oldest]


def offsite_lag(*, now: datetime | None = None) -> tuple[float, int]:
    """(seconds the oldest object not yet safely off-site has waited, how many wait); (0, 0) when none.

    Counted from when the object was ready in the primary store. Only while a second store is
    configured: without one, nothing is "waiting".
    """
    if not offsite_configured():
        return 0.0, 0
    now = now or timezone.now()
    backups = Backup.objects.filter(status=Backup.Status.VERIFIED).exclude(
        offsite_copies__status=OffsiteCopy.Status.VERIFIED
    )
    exports = Export.objects.filter(status=Export.Status.READY).exclude(
        offsite_copies__status=OffsiteCopy.Status.VERIFIED
    )
    oldest = [qs.aggregate(oldest=Min("finished_at"))["oldest"] for qs in (backups, exports)]
    waiting = backups.count() + exports.count()
    ready = [when for when in oldest if when is not None]
    return (max(0.0, (now - min(ready)).total_seconds()) if ready else 0.0), waiting


# --- Retention of the second store ---


def _bucket(when: datetime, period: str) -> str:
    year, week, _ = when.isocalendar()
    return {
        "daily": when.strftime("%Y%m%d"),
        "weekly": f"{year}W{week:02d}",
        "monthly": when.strftime("%Y%m"),
    }[period]


def offsite_keep(copies: list[OffsiteCopy]) -> set:
    """Ids to keep of one shop's (or kind's) verified copies, newest first: the newest of each of the
    last BACKUP_OFFSITE_KEEP_DAILY days, _WEEKLY weeks and _MONTHLY months, and always the newest."""
    keep = {copies[0].pk} if copies else set()
    policy = {
        "daily": settings.BACKUP_OFFSITE_KEEP_DAILY,
        "weekly": settings.BACKUP_OFFSITE_KEEP_WEEKLY,
        "monthly": settings.BACKUP_OFFSITE_KEEP_MONTHLY,
    }
    for period, count in policy.items():
        seen: set[str] = set()
        for copy in copies:
            if len(seen) >= count:
                break
            bucket = _bucket(copy.source_created_at, period)
            if bucket not in seen:
                seen.add(bucket)
                keep.add(copy.pk)
    return keep


def offsite_prune_plan(*, now: datetime | None = None) -> list[tuple[OffsiteCopy, str]]:
    """What the second store's retention deletes, with why."""
    now = now or timezone.now()
    doomed: list[tuple[OffsiteCopy, str]] = []
    # A deprovisioned shop's copies go when its primary backups do (erasure); those whose backup row
    # is already gone go now.
    erased = OffsiteCopy.objects.filter(tenant__status=Tenant.Status.DELETED, expires_at__isnull=True)
    for copy in erased.select_related("backup"):
        copy.expires_at = (copy.backup.expires_at if copy.backup else None) or now
        OffsiteCopy.objects.filter(pk=copy.pk).update(expires_at=copy.expires_at)
    expired = OffsiteCopy.objects.filter(expires_at__lte=now).exclude(status=OffsiteCopy.Status.COPYING)
    doomed += [(c, "erased: its shop was deprovisioned, or its export expired") for c in expired]
    gone = {c.pk for c, _ in doomed}
    orphaned = OffsiteCopy.objects.filter(
        status__in=OffsiteCopy.RETRYABLE,
        backup__isnull=True,
        export__isnull=True,
        created_at__lt=now - timedelta(days=7),
    ).exclude(pk__in=gone)
    doomed += [(c, "failed, and its source left the primary store more than 7 days ago") for c in orphaned]
    groups: dict[tuple, list[OffsiteCopy]] = {}
    kept = OffsiteCopy.objects.filter(status=OffsiteCopy.Status.VERIFIED, expires_at__isnull=True).exclude(
        kind=OffsiteCopy.EXPORT
    )
    for copy in kept.order_by("-source_created_at"):
        groups.setdefault((copy.kind, copy.tenant_id, copy.tenant_label), []).append(copy)
    for copies in groups.values():
        keep = offsite_keep(copies)
        doomed += [(c, "beyond the off-site retention") for c in copies if c.pk not in keep]
    return doomed


def offsite_prune(
    *, dry_run: bool, actor: Actor, now: datetime | None = None
) -> list[tuple[OffsiteCopy, str]]:
    connection.set_schema_to_public()
    if not offsite_configured():
        return []
    plan = offsite_prune_plan(now=now)
    if dry_run:
        return plan
    store = offsite_storage()
    for copy, reason in plan:
        if copy.status in (
            OffsiteCopy.Status.VERIFIED,
            OffsiteCopy.Status.CORRUPT,
            OffsiteCopy.Status.FAILED,
        ):
            store.delete(copy.location)
            store.delete(manifest_key_for(copy.location))
        audit_record(
            actor=actor,
            action=Action.OFFSITE_ERASED if reason.startswith("erased") else Action.OFFSITE_PRUNED,
            tenant=copy.tenant,
            target=str(copy.pk),
            details={"reason": reason, "tenant": copy.tenant_label, "location": copy.location},
        )
        copy.delete()
    return plan
