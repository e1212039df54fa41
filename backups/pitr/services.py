"""The continuous archive: set-up, scheduled backups, archive status, the moment a restore takes.

Restores to a moment are in ``backups.pitr.restore``.
"""

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups.errors import BackupError, BackupStateError
from backups.models import PitrBackup, WalArchive
from backups.pitr import config, pgbackrest
from backups.pitr.selectors import ArchiveState, Window, archive_state, recoverable_window
from backups.services._common import error_reason
from core.audit import Action, Actor, audit_record
from core.db import connection

logger = logging.getLogger("backups.pitr")


def pitr_setup(*, actor: Actor) -> dict[str, Any]:
    """Write pgbackrest.conf, check the server archives through it, create the stanza (idempotent)
    and check it end to end (pgBackRest switches a WAL segment and waits for it in the archive)."""
    path = config.write()
    state = archive_state()
    wanted = config.archive_command()
    if state.mode == "off" or state.command.strip() != wanted:
        raise BackupStateError(
            f"The server does not archive through pgBackRest (archive_mode={state.mode}, "
            f"archive_command={state.command!r}). Set archive_mode = on, archive_command = '{wanted}' "
            "and archive_timeout = 30 in postgresql.conf and restart PostgreSQL, then run pitr_setup again."
        )
    pgbackrest.run("stanza-create", timeout=300)
    pgbackrest.run("check", timeout=300)
    repos = [r.describe for r in config.repos()]
    audit_record(
        actor=actor,
        action=Action.PITR_CONFIGURED,
        target=settings.PITR_STANZA,
        details={"config": str(path), "repositories": repos, "archive_timeout": state.timeout},
    )
    return {"config": str(path), "repositories": repos, "archive_timeout": state.timeout}


def _type_for_schedule() -> str:
    newest_full = (
        PitrBackup.objects.filter(type=PitrBackup.Type.FULL, status=PitrBackup.Status.SUCCEEDED, repo=1)
        .order_by("-created_at")
        .first()
    )
    if newest_full is None or newest_full.created_at < timezone.now() - timedelta(
        days=settings.PITR_FULL_EVERY_DAYS
    ):
        return PitrBackup.Type.FULL
    return PitrBackup.Type.DIFF


def pitr_backup_run(*, backup_type: str = "auto", actor: Actor, repo: int | None = None) -> list[PitrBackup]:
    """Take a backup into every repository (one after the other: pgBackRest backs up into one at a
    time); ``auto`` is full when the newest full is older than PITR_FULL_EVERY_DAYS."""
    if not config.enabled():
        raise BackupStateError("The continuous archive is off: set PITR_STANZA (docs/backups.md).")
    connection.set_schema_to_public()
    kind = _type_for_schedule() if backup_type == "auto" else backup_type
    if kind not in PitrBackup.Type.values:
        raise BackupError(f"Backup type {backup_type!r}: use full, diff, incr or auto.")
    done = []
    numbers = [r.number for r in config.repos()]
    if repo is not None and repo not in numbers:
        raise BackupError(f"There is no repo{repo}; configured: {', '.join(f'repo{n}' for n in numbers)}.")
    for number in [repo] if repo is not None else numbers:
        done.append(_backup_one(kind, number, actor))
    return done


def _backup_one(kind: str, repo: int, actor: Actor) -> PitrBackup:
    try:
        row = PitrBackup.objects.create(type=kind, repo=repo)
    except IntegrityError:
        raise BackupStateError("A pgBackRest backup is already running; wait for it to finish.") from None
    started = time.monotonic()
    try:
        pgbackrest.run(
            "backup", f"--type={kind}", f"--repo={repo}", timeout=settings.BACKUP_JOB_TIMEOUT_SECONDS
        )
        newest = [b for b in pgbackrest.info().backups if b.repo == repo and not b.error]
        if not newest:
            raise BackupError(f"pgBackRest reported success but lists no backup in repo{repo}.")
        _fill(row, newest[-1])
    except Exception as exc:
        row.status, row.status_reason = PitrBackup.Status.FAILED, error_reason(exc)[:2000]
        row.finished_at, row.duration_seconds = timezone.now(), time.monotonic() - started
        row.save()
        audit_record(
            actor=actor,
            action=Action.PITR_BACKUP_FAILED,
            target=f"repo{repo}",
            details={"type": kind, "reason": row.status_reason[:500]},
        )
        raise BackupError(f"pgBackRest {kind} backup into repo{repo} failed: {error_reason(exc)}") from exc
    row.finished_at, row.duration_seconds = timezone.now(), time.monotonic() - started
    row.save()
    audit_record(
        actor=actor,
        action=Action.PITR_BACKED_UP,
        target=row.label,
        details={
            "type": kind,
            "repo": repo,
            "size_bytes": row.size_bytes,
            "repo_size_bytes": row.repo_size_bytes,
            "duration_seconds": round(row.duration_seconds, 2),
        },
    )
    return row


def _fill(row: PitrBackup, found: pgbackrest.InfoBackup) -> None:
    row.label, row.type, row.repo = found.label, found.type, found.repo
    row.status = PitrBackup.Status.SUCCEEDED
    row.backup_started_at, row.stopped_at = found.started_at, found.stopped_at
    row.wal_start, row.wal_stop = found.wal_start, found.wal_stop
    row.size_bytes, row.repo_size_bytes = found.size_bytes, found.repo_size_bytes


def pitr_status_refresh() -> WalArchive:
    """Bring the records in line with what pgBackRest lists: backups made outside the control plane
    are added, those its retention removed are marked expired; each repository's WAL range."""
    connection.set_schema_to_public()
    status, _ = WalArchive.objects.get_or_create(pk=1)
    status.checked_at = timezone.now()
    try:
        found = pgbackrest.info()
    except BackupError as exc:
        status.stanza_ok, status.detail = False, str(exc)[:2000]
        status.save()
        return status
    listed = {(b.label, b.repo): b for b in found.backups if not b.error}
    known = {(r.label, r.repo): r for r in PitrBackup.objects.exclude(label="")}
    for key, info in listed.items():
        if key not in known:
            row = PitrBackup(type=info.type, repo=info.repo, created_at=info.started_at)
            _fill(row, info)
            row.finished_at = info.stopped_at
            row.save()
    gone = [r.pk for key, r in known.items() if key not in listed and r.status == PitrBackup.Status.SUCCEEDED]
    PitrBackup.objects.filter(pk__in=gone).update(status=PitrBackup.Status.EXPIRED)
    status.stanza_ok = found.status == "ok"
    status.detail = found.status
    status.repos = [
        {"repo": a.repo, "status": a.status, "wal_min": a.wal_min, "wal_max": a.wal_max}
        for a in found.archives
    ]
    status.save()
    return status


def moment_parse(text: str) -> datetime:
    """A moment as typed ("2026-12-04 14:03:00+00", ISO 8601); without a zone it is UTC."""
    value = parse_datetime((text or "").strip().replace("T", " "))
    if value is None:
        raise BackupError(f"{text!r} is not a moment: write it like 2026-12-04 14:03:00+00 (UTC if no zone).")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def wal_archived_through(moment: datetime, *, timeout: float = 60.0) -> ArchiveState:
    """Make sure the WAL up to ``moment`` is in the archive: switch to a new segment and wait until
    the server has archived the one that was current (archive_timeout would, later)."""
    state = archive_state()
    if state.last_archived_at and state.last_archived_at >= moment and not state.age_seconds:
        return state
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_walfile_name(pg_switch_wal())")
        wanted = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        state = archive_state()
        if state.last_archived_wal and state.last_archived_wal[:24] >= wanted:
            return state
        if state.failing and (state.last_failed_wal or "")[:24] >= wanted:
            # A repository is failing (a lost region): restore from what the archive holds; the
            # scratch cluster's recovery refuses a moment past its end by itself.
            logger.warning("Archiving %s fails; restoring from what is archived.", wanted)
            return state
        if time.monotonic() > deadline:
            failing = (
                f"; archiving fails: {state.last_failed_wal} at {state.last_failed_at}"
                if state.failing
                else ""
            )
            raise BackupStateError(
                f"WAL segment {wanted} was not archived within {timeout:.0f} s{failing}; the moment "
                "cannot be reached yet. Check the archive (pitr_setup) and PostgreSQL's log."
            )
        time.sleep(0.2)


def restore_moment_check(*, to_time: datetime) -> Window:
    """Refuse a moment no restore can reach, before anything is started. Returns the window."""
    if not config.enabled():
        raise BackupStateError(
            "The continuous archive is off (PITR_STANZA is empty); no moment can be restored."
        )
    connection.set_schema_to_public()
    now = timezone.now()
    if to_time > now:
        raise BackupError(
            f"{to_time.isoformat()} is in the future (it is {now.isoformat(timespec='seconds')} now); "
            "pick a moment that has passed."
        )
    window = recoverable_window()
    if window.start is None:
        raise BackupStateError("No pgBackRest backup has succeeded yet; run pitr_backup first.")
    if to_time < window.start:
        raise BackupError(
            f"{to_time.isoformat()} is before the oldest backup's end ({window.start.isoformat()}); "
            "the recoverable window starts there."
        )
    return window
