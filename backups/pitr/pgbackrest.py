"""Running pgBackRest and pg_ctl as the data directory's owner, and reading ``pgbackrest info``."""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from backups.errors import BackupError
from backups.pitr import config


class PgBackRestError(BackupError):
    """pgBackRest exited with an error; its own message is kept."""


def as_os_user(cmd: list[str]) -> list[str]:
    # pgBackRest must write the repository and data files as the cluster's owner; initdb,
    # pg_ctl and postgres refuse root.
    if os.geteuid() == 0:
        return ["runuser", "-u", settings.PITR_OS_USER, "--", *cmd]
    return cmd


def binary() -> str:
    found = shutil.which("pgbackrest")
    if not found:
        raise PgBackRestError(
            "pgbackrest not found: install the Debian package 'pgbackrest' (scripts/setup)."
        )
    return found


def run(command: str, *args: str, timeout: float | None = None) -> str:
    """``pgbackrest --config=... --stanza=... <command> <args>``; stdout, or PgBackRestError."""
    cmd = as_os_user(
        [binary(), f"--config={config.config_path()}", f"--stanza={settings.PITR_STANZA}", *args, command]
    )
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PgBackRestError(f"pgbackrest {command} did not finish within {timeout:.0f} s.") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise PgBackRestError(f"pgbackrest {command} failed (exit {done.returncode}): {message}")
    return done.stdout


@dataclass(frozen=True)
class InfoBackup:
    label: str
    type: str
    repo: int
    started_at: datetime
    stopped_at: datetime  # consistent from here on: the earliest moment this backup restores to
    wal_start: str
    wal_stop: str
    size_bytes: int
    repo_size_bytes: int
    error: bool


@dataclass(frozen=True)
class RepoArchive:
    repo: int
    status: str  # "ok" or pgBackRest's message
    wal_min: str
    wal_max: str


@dataclass(frozen=True)
class Info:
    backups: list[InfoBackup]
    archives: list[RepoArchive]
    status: str


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def info_parse(raw: str) -> Info:
    """The stanza's backups (every repository) and the WAL range each repository holds."""
    stanzas: list[dict[str, Any]] = json.loads(raw or "[]")
    if not stanzas:
        return Info([], [], "no stanza")
    stanza = stanzas[0]
    backups = [
        InfoBackup(
            label=b["label"],
            type=b["type"],
            repo=int(b.get("database", {}).get("repo-key", 1)),
            started_at=_at(b["timestamp"]["start"]),
            stopped_at=_at(b["timestamp"]["stop"]),
            wal_start=(b.get("archive") or {}).get("start") or "",
            wal_stop=(b.get("archive") or {}).get("stop") or "",
            size_bytes=int(b.get("info", {}).get("size", 0)),
            repo_size_bytes=int(b.get("info", {}).get("repository", {}).get("size", 0)),
            error=bool(b.get("error", False)),
        )
        for b in stanza.get("backup", [])
    ]
    statuses = {int(r["key"]): (r.get("status") or {}).get("message", "?") for r in stanza.get("repo", [])}
    archives = [
        RepoArchive(
            repo=int(a.get("database", {}).get("repo-key", 1)),
            status=statuses.get(int(a.get("database", {}).get("repo-key", 1)), "?"),
            wal_min=a.get("min") or "",
            wal_max=a.get("max") or "",
        )
        for a in stanza.get("archive", [])
    ]
    return Info(backups, archives, (stanza.get("status") or {}).get("message", "?"))


def info() -> Info:
    return info_parse(run("info", "--output=json", timeout=120))
