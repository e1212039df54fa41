#!/usr/bin/env python
"""Point-in-time recovery benchmark: the continuous archive (pgBackRest) against the dumps, same run.

    .venv/bin/python bench/bench_pitr.py [--products 1000000] [--load-seconds 120]

Starts its own PostgreSQL cluster (archive_mode on, archive_timeout 30 s, archive_command =
pgBackRest's archive-push), moto's S3 server behind an nginx TLS proxy (two buckets: repo1 and
repo2 in a second region), a private Redis, and the control plane migrated into the cluster
(tests/backups/pitr_components.py, as the tests use it). Then:

  1. platform RPO under a write load: a writer commits a small transaction every 20 ms for
     --load-seconds while the age of the newest archived WAL (the data at risk, what /metrics
     exports) is sampled every 0.5 s; against the daily platform dump (RPO 24 h);
  2. one shop of --products products restored to a moment 10 minutes before its bad import
     (the moment is shifted: we note it, then wait only long enough for WAL to pass it):
     ours (scratch cluster + schema swap, tenant_restore_to_time) vs the per-tenant dump path
     (restore_in_place from a verified backup, which only reaches the backup's moment) vs a plain
     whole-cluster PITR (pgBackRest restore + recovery into a scratch cluster, nothing copied).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--load-seconds", type=float, default=120)
    args = parser.parse_args()

    from platform_site.devservices import free_port, start_redis, wait_for

    run_dir = Path(tempfile.mkdtemp(prefix="bench-pitr-"))
    moto_port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = start_redis(run_dir / "redis")
    cluster = None
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{moto_port}/moto-api/", timeout=1), "moto")
        from tests.backups.pitr_components import start_archiving_cluster

        began = time.monotonic()
        cluster = start_archiving_cluster(moto_port, redis_url=redis.url)
        print(f"archiving cluster ready in {time.monotonic() - began:.1f} s: {cluster.timings}", flush=True)
        os.environ.update(cluster.env)
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
        django.setup()
        rows = bench(args, cluster)
    finally:
        if cluster is not None:
            cluster.stop()
        redis.stop()
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
    print("\n| benchmark | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nload average (1 min) at the end: {loadavg()}")


def _insert(cluster, schema: str, count: int, prefix: str) -> float:
    started = time.monotonic()
    with cluster.connect() as conn:
        conn.execute(
            f"INSERT INTO {schema}.storefront_product (id, name, price, created_at) "
            "SELECT gen_random_uuid(), %s || ' product number ' || i, 1 + (i %% 10000) / 100.0, now() "
            "FROM generate_series(1, %s) i",
            [prefix, count],
        )
    return time.monotonic() - started


def _count(cluster, schema: str, where: str = "") -> int:
    with cluster.connect() as conn:
        return conn.execute(f"SELECT count(*) FROM {schema}.storefront_product {where}").fetchone()[0]


def rpo_under_load(cluster, seconds: float) -> list[float]:
    from backups.pitr.selectors import archive_state

    stop, commits = threading.Event(), [0]

    def writer() -> None:
        with cluster.connect(autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO initech.storefront_product (id, name, price, created_at) "
                    "VALUES (gen_random_uuid(), 'load', 1, now())"
                )
                commits[0] += 1
                time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    ages: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            age = archive_state().age_seconds
            if age is not None:
                ages.append(age)
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    print(f"RPO samples: {len(ages)}, {commits[0]} commits", flush=True)
    return ages


def bench(args, cluster) -> list[tuple[str, str]]:
    from django.utils import timezone

    from backups import pgtools
    from backups.models import Backup
    from backups.pitr.pgbackrest import as_os_user
    from backups.pitr.restore import database_restore_to_time, tenant_restore_to_time
    from backups.pitr.services import pitr_backup_run
    from backups.services.restore import backup_restore_in_place
    from backups.services.runs import backup_tenant_now
    from core.audit import Actor
    from tenants.models import Tenant

    actor = Actor.command("bench")
    rows: list[tuple[str, str]] = []

    shop = Tenant.objects.get(subdomain="acme-shoes")
    took = _insert(cluster, shop.schema_name, args.products, "Good")
    rows.append((f"shop size: {args.products:,} products inserted", f"{took:.1f} s"))
    started = time.monotonic()
    dump = backup_tenant_now(tenant=shop, actor=actor, purpose=Backup.Purpose.MANUAL)
    rows.append(("per-tenant dump of the shop (verified)", f"{time.monotonic() - started:.1f} s"))
    started = time.monotonic()
    pitr_backup_run(backup_type="diff", actor=actor, repo=1)
    rows.append(
        ("pgBackRest differential backup of the cluster (repo1)", f"{time.monotonic() - started:.1f} s")
    )
    _insert(cluster, shop.schema_name, 1000, "Later good")  # after the dump: only PITR keeps these
    with cluster.connect() as conn:
        moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    time.sleep(0.1)
    with cluster.connect() as conn:  # the bad import
        conn.execute(f"UPDATE {shop.schema_name}.storefront_product SET price = 0")
    expected = args.products + 1000 + 3  # the demo shop's own three products
    # The write load runs after the moment: the restore replays all of its WAL too.
    ages = rpo_under_load(cluster, args.load_seconds)
    rows.append(("platform RPO: daily platform dump (stock)", "86400 s (24 h)"))
    rows.append(
        (
            f"platform RPO: continuous archive, archive_timeout 30 s, writes every 20 ms for "
            f"{args.load_seconds:.0f} s",
            f"max {max(ages):.1f} s, median {statistics.median(ages):.1f} s over {len(ages)} samples",
        )
    )
    age = (timezone.now() - moment).total_seconds()

    started = time.monotonic()
    tenant_restore_to_time(tenant=shop, to_time=moment, confirm=shop.subdomain, actor=actor)
    ours = time.monotonic() - started
    ok = _count(cluster, shop.schema_name, "WHERE price > 0") == expected
    rows.append(
        (
            f"one shop to a moment {age:.0f} s back (ours: scratch + swap), {args.products:,} products",
            f"{ours:.1f} s, {'all' if ok else 'NOT all'} {expected:,} products as they were",
        )
    )
    with cluster.connect() as conn:
        conn.execute(f"UPDATE {shop.schema_name}.storefront_product SET price = 0")
    started = time.monotonic()
    backup_restore_in_place(tenant=shop, backup_id=dump.pk, confirm=shop.subdomain, actor=actor)
    stock = time.monotonic() - started
    lost = expected - _count(cluster, shop.schema_name, "WHERE price > 0")
    rows.append(
        (
            "one shop from its newest dump (per-tenant dump path)",
            f"{stock:.1f} s, back to the dump's moment: {lost:,} later products lost",
        )
    )
    started = time.monotonic()
    done = database_restore_to_time(to_time=moment, target=None, keep_cluster=True, actor=actor)
    whole = time.monotonic() - started
    subprocess.run(
        as_os_user([pgtools.pg_binary("pg_ctl"), "-D", done["data"], "-m", "immediate", "stop"]),
        capture_output=True,
        check=False,
    )
    rows.append(
        ("whole cluster to the moment (pgBackRest restore + recovery, nothing copied)", f"{whole:.1f} s")
    )
    rows.append(("ratio one shop (ours) / whole cluster", f"{ours / whole:.2f}"))
    print(f"moment {moment.isoformat()}, now {timezone.now().isoformat()}", flush=True)
    return rows


if __name__ == "__main__":
    main()
