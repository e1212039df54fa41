"""A scratch cluster restored from the continuous archive: its own data directory, a private
loopback port, archiving off. The live cluster is never touched; the scratch one is stopped and
deleted afterwards unless the caller keeps it."""

import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings

from backups import pgtools
from backups.errors import BackupError
from backups.pitr import pgbackrest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ScratchCluster:
    folder: Path
    port: int
    recovered_to: str = ""  # the server's own words: the last transaction it replayed

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def params(self, dbname: str | None = None) -> dict[str, str]:
        """Connection parameters, as pgtools.database_params gives them for our own server."""
        live = pgtools.database_params()
        return {**live, "host": "127.0.0.1", "port": str(self.port), "dbname": dbname or live["dbname"]}

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection:
        p = self.params(dbname)
        return psycopg.connect(
            host=p["host"],
            port=p["port"],
            user=p["user"],
            password=p["password"] or None,
            dbname=p["dbname"],
            **kwargs,
        )

    def running(self) -> bool:
        status = subprocess.run(
            pgbackrest.as_os_user([pgtools.pg_binary("pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def stop(self) -> None:
        pg_ctl = pgtools.pg_binary("pg_ctl")
        subprocess.run(
            pgbackrest.as_os_user([pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _restore_args(*, to_time: datetime | None, backup_label: str | None) -> list[str]:
    # archive-mode=off: the promoted scratch cluster must never push its new timeline into the
    # repository the live cluster archives to.
    args = ["--archive-mode=off", "--target-action=promote"]
    if to_time is not None:
        args += ["--type=time", f"--target={to_time.isoformat(sep=' ')}"]
        if backup_label:
            args.append(f"--set={backup_label}")
    else:
        assert backup_label, "a moment or a backup label"
        args += ["--type=immediate", f"--set={backup_label}"]
    return args


def _config_files(data: Path) -> None:
    """Debian keeps postgresql.conf and pg_hba.conf outside the data directory: give the scratch
    cluster its own (loopback only, trust: the port is private and the cluster throwaway)."""
    if not (data / "postgresql.conf").exists():
        (data / "postgresql.conf").write_text("# scratch cluster for a restore to a moment\n")
    if not (data / "pg_hba.conf").exists():
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    if not (data / "pg_ident.conf").exists():
        (data / "pg_ident.conf").write_text("")


def _wait_promoted(cluster: ScratchCluster, deadline: float) -> None:
    while True:
        try:
            with cluster.connect(connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        if not cluster.running():
            log = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
            fatal = re.findall(r"FATAL:\s+(.*)", log) or ["(no message)"]
            raise BackupError(f"The scratch cluster could not recover: {fatal[-1]}")
        if time.monotonic() > deadline:
            raise BackupError(f"The scratch cluster did not finish recovery in time; see {cluster.log}.")
        time.sleep(0.2)


@contextmanager
def scratch_cluster(
    *,
    to_time: datetime | None = None,
    backup_label: str | None = None,
    keep: bool = False,
    timeout: float = 6 * 3600,
) -> Iterator[ScratchCluster]:
    """Restore the stanza to ``to_time`` (or to the end of backup ``backup_label``) into a new data
    directory under PITR_SCRATCH_DIR, start it on a private port, wait until it is promoted."""
    folder = Path(settings.PITR_SCRATCH_DIR) / f"pitr-{uuid.uuid4().hex[:12]}"
    cluster = ScratchCluster(folder, _free_port())
    folder.mkdir(parents=True)
    cluster.data.mkdir(mode=0o700)
    (folder / "sockets").mkdir()
    if pgbackrest.as_os_user(["x"]) != ["x"]:
        for item in (folder, cluster.data, folder / "sockets"):
            shutil.chown(item, settings.PITR_OS_USER)
    try:
        pgbackrest.run(
            "restore",
            f"--pg1-path={cluster.data}",
            *_restore_args(to_time=to_time, backup_label=backup_label),
            timeout=timeout,
        )
        _config_files(cluster.data)
        options = (
            f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {folder / 'sockets'} "
            "-c archive_mode=off -c fsync=off -c synchronous_commit=off"
        )
        started = subprocess.run(
            pgbackrest.as_os_user(
                [
                    pgtools.pg_binary("pg_ctl"),
                    "-D",
                    str(cluster.data),
                    "-o",
                    options,
                    "-l",
                    str(cluster.log),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            log = cluster.log.read_text(errors="replace")[-1500:] if cluster.log.exists() else ""
            raise BackupError(f"The scratch cluster did not start: {started.stderr.strip()} {log}")
        _wait_promoted(cluster, time.monotonic() + timeout)
        found = re.findall(r"last completed transaction was at log time (.*)", cluster.log.read_text())
        cluster.recovered_to = found[-1].strip() if found else ""
    except BaseException:
        cluster.remove()
        raise
    try:
        yield cluster
    except BaseException:
        cluster.remove()
        raise
    if not keep:
        cluster.remove()
