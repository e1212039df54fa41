"""Real components for the continuous-archive tests and bench: a PostgreSQL cluster archiving
through pgBackRest into two S3 buckets (two regions) on moto's server, reached over TLS.

moto's own ``--ssl`` server ends TLS connections without a close_notify, which pgBackRest (OpenSSL
3) reports as "unexpected eof while reading" and retries for a minute; so nginx terminates TLS
in front of moto's plain server, with a certificate of our own that pgBackRest verifies.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import psycopg

from platform_site.devservices import free_port, postgres_bin, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]
STANZA = "platform"


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _own(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres")


@dataclass
class TlsProxy:
    folder: Path
    port: int
    cert: Path

    def stop(self) -> None:
        subprocess.run(
            ["nginx", "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), "-s", "stop"],
            capture_output=True,
            check=False,
        )


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def tls_proxy(folder: Path, upstream_port: int) -> TlsProxy:
    """nginx terminating TLS on a private port in front of 127.0.0.1:upstream_port."""
    folder.mkdir(parents=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(cert, 0o644)
    port = free_port()
    # "localhost" may resolve to ::1 first.
    ipv6 = f"listen [::1]:{port} ssl;" if _ipv6_loopback() else ""
    (folder / "nginx.conf").write_text(
        f"daemon on; pid {folder}/nginx.pid; error_log {folder}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f" server {{ listen 127.0.0.1:{port} ssl; {ipv6} ssl_certificate {cert}; ssl_certificate_key {key};\n"
        "  client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;\n"
        "  proxy_http_version 1.1;\n"
        f"  location / {{ proxy_pass http://127.0.0.1:{upstream_port}; proxy_set_header Host $http_host; }}\n"
        " }\n}\n"
    )
    subprocess.run(
        ["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")],
        check=True,
        capture_output=True,
    )
    import socket

    wait_for(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True, "nginx TLS proxy")
    return TlsProxy(folder, port, cert)


@dataclass
class ArchivingCluster:
    """A PostgreSQL cluster whose WAL pgBackRest archives, with the control plane's database in it."""

    folder: Path
    port: int
    env: dict[str, str]
    buckets: tuple[str, str]
    moto_port: int
    proxy: TlsProxy
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/platform"

    def connect(self, dbname: str = "platform", **kwargs) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, **kwargs)

    def manage(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """A management command of the control plane, run against this cluster."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, (
                f"manage.py {' '.join(args)}: {result.stdout}\n{result.stderr[-3000:]}"
            )
        return result

    def s3(self, region: str = "us-east-1"):
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
        )
        self.proxy.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_archiving_cluster(
    moto_port: int, *, archive_timeout: int = 30, redis_url: str = ""
) -> ArchivingCluster:
    """initdb, pgBackRest set up by the control plane (pitr_setup), the control plane's database
    migrated with the demo shops, and a first full backup in each repository."""
    folder = Path(tempfile.mkdtemp(prefix="pitr-"))
    _own(folder)
    proxy = tls_proxy(folder / "tls", moto_port)
    suffix = uuid.uuid4().hex[:8]
    buckets = (f"pitr-{suffix}-1", f"pitr-{suffix}-2")
    boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=buckets[0])
    boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=buckets[1], CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    port = free_port()
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    _own(sockets)
    subprocess.run(
        _as_postgres(
            [
                postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    # Verified against the certificate's name (pgBackRest matches names, not IP addresses).
    endpoint = f"https://localhost:{proxy.port}"
    config_path = folder / "pgbackrest" / "pgbackrest.conf"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        DEBUG="1",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/platform",
        PITR_STANZA=STANZA,
        PITR_PG_DATA=str(data),
        PITR_PG_SOCKET_DIR=str(sockets),
        PITR_REPO1=f"s3://{buckets[0]}/pgbackrest?endpoint={endpoint}&region=us-east-1&uri_style=path"
        f"&ca_file={proxy.cert}",
        PITR_REPO2=f"s3://{buckets[1]}/pgbackrest?endpoint={endpoint}&region=eu-west-1&uri_style=path"
        f"&ca_file={proxy.cert}",
        PITR_CONFIG_PATH=str(config_path),
        PITR_SCRATCH_DIR=str(folder / "scratch"),
        BACKUP_S3_ACCESS_KEY_ID="testing",
        BACKUP_S3_SECRET_ACCESS_KEY="testing",
        BACKUP_STORAGE="local",
        BACKUP_LOCAL_DIR=str(folder / "dumps"),
        TENANT_SCHEMA_POOL_SIZE="0",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    archive_command = f"pgbackrest --config={config_path} --stanza={STANZA} archive-push %p"
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c wal_level=replica "
        f"-c archive_mode=on -c archive_timeout={archive_timeout} -c max_wal_senders=2"
    )
    (data / "postgresql.auto.conf").write_text(f"archive_command = '{archive_command}'\n")
    _own(data / "postgresql.auto.conf")
    subprocess.run(
        _as_postgres(
            [
                postgres_bin("pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "postgres.log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    cluster = ArchivingCluster(folder, port, env, buckets, moto_port, proxy)
    try:
        with cluster.connect("postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE platform")
        for step in (
            ("migrate_schemas", "--shared", "-v", "0"),
            ("seed_demo", "--password-file", str(folder / "demo-password")),
            ("pitr_setup",),
            ("pitr_backup", "--type", "full", "--repo", "1"),
        ):
            began = time.monotonic()
            cluster.manage(*step)
            cluster.timings[step[0]] = round(time.monotonic() - began, 2)
    except BaseException:
        cluster.stop()
        raise
    return cluster
