#!/usr/bin/env python
"""Off-site copies benchmark: copy lag under a burst of backups, and our copy against a plain one.

    .venv/bin/python bench/bench_offsite.py [--tenants 100] [--products 2000] [--workers 2]

On a dedicated database (``bench_offsite``, dropped at the end), a private Redis and moto's S3
server with two buckets in two regions (primary us-east-1, second store eu-west-1):

  1. a burst of M tenant backups on W backups workers without a second store (the baseline), then
     the same burst with one: the copies go on the same queue after each dump. Wall time of each
     burst, and the copy lag of every object (verified in the primary -> verified off-site):
     p50 / p95 / max;
  2. per object: our copy (streamed, one part in memory, the source hashed, the far copy read back
     and hashed) against a plain copy the way scripts do it (boto3 download_fileobj to a temporary
     file, then upload_file; no checksum at all), on the same objects.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)
DB_NAME = "bench_offsite"
PRIMARY_REGION, FAR_REGION = "us-east-1", "eu-west-1"

from bench.bench_backups import BACKUP_WORKER, loadavg, run_workers  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--products", type=int, default=2000, help="products per tenant")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from urllib.parse import urlparse

    import psycopg

    from platform_site import devservices

    run_dir = Path(tempfile.mkdtemp(prefix="bench-offsite-"))
    base_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    db_url = urlparse(base_url)._replace(path=f"/{DB_NAME}").geturl()
    admin_url = urlparse(base_url)._replace(path="/postgres").geturl()
    redis = devservices.start_redis(run_dir / "redis")
    moto_port = devservices.free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    endpoint = f"http://127.0.0.1:{moto_port}"
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis.url,
        DEBUG="1",
        LOG_LEVEL="WARNING",
        CONN_MAX_AGE="0",
        BACKUP_STORAGE="s3",
        BACKUP_S3_BUCKET="primary",
        BACKUP_S3_PREFIX="p",
        BACKUP_S3_ENDPOINT_URL=endpoint,
        BACKUP_S3_REGION=PRIMARY_REGION,
        BACKUP_S3_ACCESS_KEY_ID="bench",
        BACKUP_S3_SECRET_ACCESS_KEY="bench",
        BACKUP_OFFSITE_S3_BUCKET="",
        BACKUP_OFFSITE_S3_PREFIX="p",
        BACKUP_OFFSITE_S3_ENDPOINT_URL=endpoint,
        BACKUP_OFFSITE_S3_REGION=FAR_REGION,
        BACKUP_OFFSITE_S3_ACCESS_KEY_ID="bench",
        BACKUP_OFFSITE_S3_SECRET_ACCESS_KEY="bench",
    )
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "platform_site.settings"
    rows: list[tuple[str, str]] = []
    try:
        devservices.wait_for(
            lambda: __import__("urllib.request").request.urlopen(endpoint, timeout=1), "moto"
        )
        import django

        django.setup()
        rows = bench(args, env, run_dir, endpoint)
    finally:
        moto.terminate()
        moto.wait()
        redis.stop()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        shutil.rmtree(run_dir, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'measure':{width}} | value |")
    print(f"|{'-' * (width + 2)}|---|")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")


def bench(args, env, run_dir: Path, endpoint: str) -> list[tuple[str, str]]:
    import boto3
    from django.conf import settings
    from django.core.management import call_command

    from backups import pgtools
    from backups.models import Backup, OffsiteCopy
    from backups.services import offsite
    from backups.services.runs import backup_create
    from core.audit import Actor
    from tenants.models import Plan
    from tenants.services import tenant_provision

    actor = Actor.command("bench")
    rows: list[tuple[str, str]] = []
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=PRIMARY_REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.create_bucket(Bucket="primary")
    far = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=FAR_REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    far.create_bucket(Bucket="far", CreateBucketConfiguration={"LocationConstraint": FAR_REGION})
    far.create_bucket(Bucket="far-plain", CreateBucketConfiguration={"LocationConstraint": FAR_REGION})
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    plan = Plan.objects.create(name="Bench", slug="bench", max_products=10_000_000)
    started = time.monotonic()
    tenants = [
        tenant_provision(
            subdomain=f"shop{i:04d}", name="S", plan=plan, owner_email="o@s.test", actor=actor
        ).tenant
        for i in range(args.tenants)
    ]
    with pgtools.connect() as conn:
        for t in tenants:
            conn.execute(
                f'INSERT INTO "{t.schema_name}".storefront_product (id, name, price, created_at) '
                "SELECT gen_random_uuid(), 'Product ' || i || ' with a realistic name', i %% 1000, now() "
                "FROM generate_series(1, %s) i",
                [args.products],
            )
        conn.commit()
    print(
        f"{args.tenants} tenants with {args.products} products in {time.monotonic() - started:.1f} s",
        flush=True,
    )

    def burst(label: str) -> float:
        for t in tenants:
            backup_create(kind=Backup.Kind.TENANT, tenant=t, actor=actor)
        load = loadavg()
        wall, _ = run_workers(args.workers, env, BACKUP_WORKER)
        failed = Backup.objects.exclude(status=Backup.Status.VERIFIED).count()
        if failed:
            raise SystemExit(f"{failed} backups did not verify")
        rows.append(
            (label, f"{wall:.1f} s ({args.tenants / wall:.1f} backups/s), load {load} -> {loadavg()}")
        )
        return wall

    # 1. The burst, without and then with a second store.
    base = burst(f"burst of {args.tenants} backups, {args.workers} workers, no second store (baseline)")
    env["BACKUP_OFFSITE_S3_BUCKET"] = settings.BACKUP_OFFSITE_S3_BUCKET = "far"
    os.environ["BACKUP_OFFSITE_S3_BUCKET"] = "far"
    ours = burst(f"same burst with off-site copies on the same queue ({args.workers} workers)")
    copies = list(OffsiteCopy.objects.all())
    bad = [c for c in copies if c.status != OffsiteCopy.Status.VERIFIED]
    if bad or len(copies) != args.tenants:
        raise SystemExit(f"{len(bad)} copies not verified, {len(copies)} made: {bad[:1]}")
    lags = [(c.copied_at - c.source_ready_at).total_seconds() for c in copies]
    rows.append(("wall-time overhead of the copies", f"{ours - base:+.1f} s ({ours / base:.2f}x)"))
    rows.append(
        (
            "copy lag (verified in primary -> verified off-site)",
            f"p50 {pct(lags, 50):.1f} s, p95 {pct(lags, 95):.1f} s, max {max(lags):.1f} s",
        )
    )

    # 2. Per object: ours (streamed, hashed, read back) vs a plain download-to-file + upload.
    sample = copies[: min(len(copies), 30)]
    size = statistics.mean(c.size_bytes for c in sample)
    OffsiteCopy.objects.filter(pk__in=[c.pk for c in sample]).update(status=OffsiteCopy.Status.FAILED)
    t0 = time.monotonic()
    for c in sample:
        done = offsite.offsite_copy_run(copy_id=str(c.pk), actor=actor)
        assert done.status == OffsiteCopy.Status.VERIFIED, done.status_reason
    ours_each = (time.monotonic() - t0) / len(sample)
    tmp = run_dir / "plain.dump"
    t0 = time.monotonic()
    for c in sample:
        key = f"p/{c.location}"
        client.download_file("primary", key, str(tmp))
        far.upload_file(str(tmp), "far-plain", key)
    plain_each = (time.monotonic() - t0) / len(sample)
    rows.append(
        (
            f"one copy, {size / 1024:.0f} KiB mean, {len(sample)} objects: plain download+upload (no check)",
            f"{plain_each * 1000:.1f} ms",
        )
    )
    rows.append(
        (
            "one copy, same objects: ours (streamed, sha256 of source, far copy read back)",
            f"{ours_each * 1000:.1f} ms ({ours_each / plain_each:.2f}x plain)",
        )
    )
    return rows


if __name__ == "__main__":
    main()
