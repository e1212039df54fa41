"""Read side of the continuous archive: the live server's archiver, the recoverable window, facts."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Min

from backups.models import PitrBackup
from backups.pitr import config
from core.admin_links import admin_path
from core.db import connection
from core.facts import WalArchiveFact

# WAL beyond the last archived segment smaller than one page is the server's own bookkeeping
# (running-xacts records every 15 s), which archive_timeout does not switch for either.
WAL_PAGE = 8192

ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), current_setting('archive_command'),
       current_setting('archive_timeout'), a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint END,
       current_setting('wal_segment_size'), now()
FROM pg_stat_archiver a
"""


@dataclass(frozen=True)
class ArchiveState:
    mode: str
    command: str
    timeout: str
    last_archived_wal: str | None
    last_archived_at: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_at: datetime | None
    age_seconds: float | None  # see WalArchiveFact
    now: datetime

    @property
    def failing(self) -> bool:
        return bool(
            self.last_failed_at and (not self.last_archived_at or self.last_failed_at > self.last_archived_at)
        )


def _segment_end(wal: str, segment_size: int) -> int:
    """The LSN (as a number) where a WAL file ends: the name is timeline, log and segment, in hex."""
    log, seg = int(wal[8:16], 16), int(wal[16:24], 16)
    return log * 0x100000000 + (seg + 1) * segment_size


def _size(setting: str) -> int:
    number = int("".join(c for c in setting if c.isdigit()))
    return number * 1024 * 1024 if setting.upper().endswith("MB") else number


def archive_state() -> ArchiveState:
    """The live server's archiver, and the age of what is not yet archived (the RPO right now)."""
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(ARCHIVER_SQL)
        (mode, command, timeout, wal, at, failed, failed_wal, failed_at, insert, seg_size, now) = (
            cursor.fetchone()
        )
    age: float | None = None
    if wal and at:
        pending = insert is None or insert - _segment_end(wal.split(".")[0], _size(seg_size)) > WAL_PAGE
        age = max((now - at).total_seconds(), 0.0) if pending else 0.0
    return ArchiveState(mode, command, timeout, wal, at, failed, failed_wal, failed_at, age, now)


@dataclass(frozen=True)
class Window:
    """The moments a restore can reach: from the oldest backup's end to the newest archived WAL."""

    start: datetime | None
    end: datetime | None

    @property
    def usable(self) -> bool:
        return self.start is not None and self.end is not None and self.start <= self.end


def recoverable_window(state: ArchiveState | None = None) -> Window:
    connection.set_schema_to_public()
    start = PitrBackup.objects.filter(status=PitrBackup.Status.SUCCEEDED).aggregate(m=Min("stopped_at"))["m"]
    state = state or archive_state()
    return Window(start, state.last_archived_at)


def wal_archive_facts() -> list[WalArchiveFact]:
    """For monitoring: one fact when the continuous archive is configured, none otherwise."""
    if not config.enabled():
        return []
    state = archive_state()
    link = admin_path(PitrBackup, "changelist")
    if state.mode == "off":
        return [WalArchiveFact(False, None, False, "archive_mode is off on the server", link)]
    detail = f"last archived {state.last_archived_wal} at {state.last_archived_at}"
    if state.failing:
        detail = f"archiving {state.last_failed_wal} failed at {state.last_failed_at}; {detail}"
    return [WalArchiveFact(True, state.age_seconds, state.failing, detail, link)]
