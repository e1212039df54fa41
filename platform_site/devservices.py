"""Find or start PostgreSQL and Redis for the demo and the test suite.

Uses DATABASE_URL / REDIS_URL when they answer; otherwise starts throwaway servers from the
installed Debian binaries under a project folder, on private loopback ports.

    python -m platform_site.devservices env   # prints `export ...` lines for a shell
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import redis

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/platform"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


def postgres_answers(url: str) -> bool:
    try:
        psycopg.connect(urlparse(url)._replace(path="/postgres").geturl(), connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def postgres_answers_at(url: str) -> bool:
    """True when the exact database in ``url`` accepts a connection."""
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found and name != "pg_ctl":
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install the Debian package 'postgresql'.")
    return candidates[-1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class LocalServer:
    url: str
    stop_cmd: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, capture_output=True, check=False)


def start_postgres(folder: Path, port: int | None = None) -> LocalServer:
    """Start (initialising on first use) a private cluster in ``folder``."""
    port = port or free_port()
    data, sockets = folder / "data", folder / "sockets"
    folder.mkdir(parents=True, exist_ok=True)
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            _as_postgres_user([postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
                               "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True,
        )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run(
        _as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l",
                           str(folder / "postgres.log"), "-w", "start"]),
        check=True, capture_output=True,
    )
    stop = _as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
    return LocalServer(f"postgres://postgres@127.0.0.1:{port}/platform", stop)


def start_redis(folder: Path, port: int | None = None, databases: int = 16) -> LocalServer:
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    pidfile = folder / "redis.pid"
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--databases", str(databases), "--dir", str(folder),
         "--pidfile", str(pidfile), "--logfile", str(folder / "redis.log")],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis_answers(url), "redis-server")
    return LocalServer(url, ["redis-cli", "-p", str(port), "shutdown", "nosave"])


def start_dockerd(folder: Path, extra_args: tuple[str, ...] = ()) -> LocalServer:
    """A private Docker Engine (Debian docker.io) on a unix socket in ``folder``.

    No default bridge and no iptables rules, so it leaves the host's firewall alone: containers
    reach each other on user-defined bridge networks, published ports go through docker-proxy, and
    ``network_mode=host`` containers are on loopback directly. The url is the ``unix://`` address.
    """
    if not shutil.which("dockerd"):
        raise RuntimeError("dockerd not found: install the Debian package 'docker.io' (scripts/setup).")
    folder.mkdir(parents=True, exist_ok=True)
    sock, pidfile = folder / "docker.sock", folder / "docker.pid"
    log = open(folder / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
         "-H", f"unix://{sock}", "--pidfile", str(pidfile), "--iptables=false", "--bridge=none",
         "--ip-masq=false", *extra_args],
        stdout=log, stderr=log, start_new_session=True,
    )
    url = f"unix://{sock}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited ({proc.returncode}); see {folder / 'dockerd.log'}")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in s.recv(1024)

    try:
        wait_for(answers, "dockerd", timeout=60)
    except RuntimeError:
        proc.kill()
        raise
    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        # dockerd leaves its network namespace mounted (exec/netns/default); unmount what is ours.
        with open("/proc/self/mounts") as mounts:
            ours = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{folder}/")]
        for mount_point in sorted(ours, reverse=True):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)

    server = LocalServer(url)
    server.stop = stop  # type: ignore[method-assign]
    return server


def ensure_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_services(local_dir: Path) -> dict[str, str]:
    """Return DATABASE_URL and REDIS_URL that answer, starting local servers where needed."""
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if not postgres_answers(database_url):
        print(f"PostgreSQL at {urlparse(database_url).netloc} does not answer; starting a local one",
              file=sys.stderr)
        database_url = start_postgres(local_dir / "postgres", port=54329).url
    if not redis_answers(redis_url):
        print(f"Redis at {urlparse(redis_url).netloc} does not answer; starting a local one",
              file=sys.stderr)
        redis_url = start_redis(local_dir / "redis", port=63799).url
    ensure_database(database_url)
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url}


if __name__ == "__main__" and sys.argv[1:] == ["env"]:
    for key, value in ensure_services(BASE_DIR / ".local").items():
        print(f"export {key}={value}")
