"""The private world the deployment benches run in: their own database, Redis and Docker Engine,
all removed again however the bench ends."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from platform_site import devservices


@contextmanager
def docker_bench_environment(db_name: str, prefix: str, **env: str) -> Iterator[tuple[str, Path]]:
    """Yields (the dockerd URL, the run folder); DATABASE_URL and REDIS_URL point at the bench's own."""
    import psycopg

    base = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    admin_url = urlparse(base)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db_name}"')
    run_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(run_dir, 0o755)  # local nginx workers run as nobody
    redis = devservices.start_redis(run_dir / "redis")
    os.environ.update(
        DATABASE_URL=urlparse(base)._replace(path=f"/{db_name}").geturl(), REDIS_URL=redis.url, DEBUG="1",
        DJANGO_SETTINGS_MODULE="platform_site.settings", **env,
    )
    dockerd = devservices.start_dockerd(run_dir / "dockerd")
    try:
        yield dockerd.url, run_dir
    finally:
        import docker
        from django.db import connections

        client = docker.DockerClient(base_url=dockerd.url, version="auto")
        for c in client.containers.list(all=True):
            c.remove(force=True)
        client.close()
        dockerd.stop()
        redis.stop()
        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(run_dir, ignore_errors=True)
