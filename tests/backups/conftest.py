"""Backups fixtures: a private backup folder per test, moto's S3 server, helpers to read rows."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg import sql

from backups import pgtools
from platform_site.devservices import free_port, wait_for
from tests.conftest import BASE_DIR, subprocess_env

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
PART_SIZE = 64 * 1024


@pytest.fixture(autouse=True)
def backup_dir(tmp_path, settings, monkeypatch):
    folder = tmp_path / "backups"
    settings.BACKUP_STORAGE = "local"
    settings.BACKUP_LOCAL_DIR = folder
    # Subprocesses (the RQ worker) read the same settings from the environment.
    monkeypatch.setenv("BACKUP_STORAGE", "local")
    monkeypatch.setenv("BACKUP_LOCAL_DIR", str(folder))
    pgtools.server_major.cache_clear()
    pgtools.pg_binary.cache_clear()
    return folder


BACKUP_WORKER = ["manage.py", "rqworker", "backups", "--worker-class", "backups.worker.BackupWorker"]


@pytest.fixture
def run_backup_worker():
    """The backups queue's own worker (no fork per job), as production runs it, until the queue is empty."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, *BACKUP_WORKER, "--burst", *args],
            cwd=BASE_DIR, env=subprocess_env(**env), capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


@pytest.fixture(scope="session")
def moto_port(tmp_path_factory):
    """moto's S3 server on a private port (multipart parts allowed down to 64 KiB)."""
    assert MOTO_SERVER.exists(), f"{MOTO_SERVER} missing: pip install 'moto[server]' (requirements-dev.txt)"
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, S3_UPLOAD_PART_MIN_SIZE=str(PART_SIZE)),
        stdout=log,
        stderr=log,
    )
    try:
        import urllib.request

        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1), "moto_server"
        )
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def s3_client(port: int):
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3(moto_port, settings, monkeypatch):
    """Point the backup store at a fresh bucket on moto; returns a direct client and the bucket."""
    bucket = f"backups-{uuid.uuid4().hex[:10]}"
    client = s3_client(moto_port)
    client.create_bucket(Bucket=bucket)
    values = {
        "BACKUP_STORAGE": "s3",
        "BACKUP_S3_BUCKET": bucket,
        "BACKUP_S3_PREFIX": "platform",
        "BACKUP_S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "BACKUP_S3_REGION": "us-east-1",
        "BACKUP_S3_ACCESS_KEY_ID": "testing",
        "BACKUP_S3_SECRET_ACCESS_KEY": "testing",
        "BACKUP_S3_SSE": "AES256",
        "BACKUP_S3_PART_SIZE": PART_SIZE,
        "BACKUP_S3_MAX_ATTEMPTS": 2,
    }
    for key, value in values.items():
        setattr(settings, key, value)
        monkeypatch.setenv(key, str(value))
    return client, bucket


@pytest.fixture
def staff():
    """A logged-in superuser's client on the admin host."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def add_products(schema: str, count: int, prefix: str) -> None:
    with pgtools.connect() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.storefront_product (id, name, price, created_at) "
                "SELECT gen_random_uuid(), %s || lpad(i::text, 7, '0'), (i %% 1000) + 0.99, now() "
                "FROM generate_series(1, %s) i"
            ).format(sql.Identifier(schema)),
            [prefix, count],
        )


def table_rows(schema: str, table: str = "storefront_product", dbname: str | None = None) -> list[tuple]:
    """Every row of a table, ordered by every column, read over a direct connection."""
    with pgtools.connect(dbname) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
        ]
        assert cols, f"{schema}.{table} does not exist"
        query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
            sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        return conn.execute(query).fetchall()


def all_schemas() -> set[str]:
    with pgtools.connect() as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace "
                "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            ).fetchall()
        }


def scratch_databases() -> list[str]:
    with pgtools.connect() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [pgtools.scratch_prefix()]
        )
        return [r[0] for r in rows]


__all__ = ["add_products", "table_rows", "all_schemas", "scratch_databases", "s3_client", "psycopg"]


@pytest.fixture
def target():
    """A fresh database name for a whole-database restore (with the scratch prefix), dropped
    afterwards with any working copy."""
    name = f"{pgtools.scratch_prefix()}dr_{uuid.uuid4().hex[:8]}"
    yield name
    with pgtools.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    for db in names:
        if db == name or db.startswith(name[:40] + "_restoring_"):
            pgtools.database_drop(db)


# === Off-site copies: a second bucket in another region on the same moto server ===

OFFSITE_REGION = "eu-west-1"


@pytest.fixture
def offsite(moto_port, settings, monkeypatch):
    """The second store: a fresh bucket in another region; returns a client for it and the bucket."""
    bucket = f"offsite-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name=OFFSITE_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": OFFSITE_REGION})
    values = {
        "BACKUP_OFFSITE_S3_BUCKET": bucket,
        "BACKUP_OFFSITE_S3_PREFIX": "far",
        "BACKUP_OFFSITE_S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "BACKUP_OFFSITE_S3_REGION": OFFSITE_REGION,
        "BACKUP_OFFSITE_S3_ACCESS_KEY_ID": "testing",
        "BACKUP_OFFSITE_S3_SECRET_ACCESS_KEY": "testing",
        "BACKUP_OFFSITE_S3_SSE": "AES256",
    }
    for key, value in values.items():
        setattr(settings, key, value)
        monkeypatch.setenv(key, str(value))
    return client, bucket
