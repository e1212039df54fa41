#!/usr/bin/env python
"""Backups benchmark: our streamed backups and restores against plain pg_dump/pg_restore, same run.

    .venv/bin/python bench/bench_backups.py [--products 1000000] [--tenants 500] [--workers 2]

(--products 0 skips parts 1 and 2, --tenants 0 parts 3 and 4.)

On a dedicated database (``bench_backups``, dropped at the end) with a private Redis and moto's
S3 server on private ports, it measures:

  1. one tenant with N products: plain ``pg_dump -Fc --schema`` to a file (stock) vs our backup
     job on the backups queue's worker to the local folder and to S3 (multipart, 8 MiB parts):
     time, throughput, and the worker's peak RSS (VmHWM of the worker's python processes; pg_dump
     is a separate process and not counted);
  2. restore of that tenant: plain ``pg_restore`` into an empty scratch database (stock) vs our
     drill restore (download + checksum + restore + checks = measured RTO), restore as a new
     tenant and restore in place (safety backup + scratch rename + swap);
  3. M small tenants backed up by W workers: total time, against W plain ``pg_dump`` processes
     dumping the same schemas (stock), and against the same jobs on RQ's forking worker (the
     set-up before the backups queue had its own worker; --skip-forking leaves it out);
  4. granularity: per-tenant dumps of all M tenants vs one ``pg_dump`` of the whole database; and
     the whole-database restore (plain ``pg_restore`` vs ``restore_database``).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)
DB_NAME = "bench_backups"


def peak_rss_of_tree(root_pid: int, stop: threading.Event, out: dict) -> None:
    """Poll the VmHWM (peak RSS) of root_pid and its python descendants (not pg_dump)."""
    peak = 0
    while not stop.is_set():
        pids, frontier = set(), [root_pid]
        while frontier:
            pid = frontier.pop()
            pids.add(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            frontier += [int(c) for c in children]
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if "Name:\tpython" not in status and "Name:\trqworker" not in status:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        time.sleep(0.02)
    out["peak_kb"] = peak


# The production set-up for backups (their own queue and worker), and RQ's forking worker on it.
BACKUP_WORKER = ("backups", "--worker-class", "backups.worker.BackupWorker")
FORKING_WORKER = ("backups", "--worker-class", "monitoring.worker.MetricsWorker")


def run_workers(count: int, env: dict, worker_args=BACKUP_WORKER) -> tuple[float, int]:
    """Run `count` burst workers until their queue is empty; wall time and peak RSS (KB).

    The wall time ends when every worker has logged that it is done. A burst worker can take up
    to a minute more to exit after that: RQ joins its pubsub thread, which waits in
    redis-py's get_message(timeout=60) and misses the stop now and then. That wait is not backup
    work; a worker still there 2 s after its last job is stopped (SIGTERM, a warm shutdown).
    """
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    procs, peaks, stops, threads, logs = [], [], [], [], []
    for i in range(count):
        # To a file, never a pipe: RQ logs a few lines a job, and a pipe nobody reads until the
        # first worker ends fills up and stalls the others (earlier runs of this bench did).
        logs.append(log_dir / f"worker-{i}.log")
        with logs[-1].open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", *worker_args, "--burst"],
                cwd=BASE_DIR,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        stop, peak = threading.Event(), {}
        thread = threading.Thread(target=peak_rss_of_tree, args=(proc.pid, stop, peak), daemon=True)
        thread.start()
        procs.append(proc)
        peaks.append(peak)
        stops.append(stop)
        threads.append(thread)
    done_at: dict[int, float] = {}
    deadline = started + 1800
    while len(done_at) < count and time.monotonic() < deadline:
        for i, (proc, log) in enumerate(zip(procs, logs, strict=True)):
            if i not in done_at and (proc.poll() is not None or b"done, quitting" in log.read_bytes()):
                done_at[i] = time.monotonic()
        time.sleep(0.02)
    elapsed = max(done_at.values(), default=time.monotonic()) - started
    for i, proc in enumerate(procs):
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=30)
            continue  # stopped by us after it finished; its exit status says nothing
        if proc.returncode != 0:
            raise SystemExit(f"worker failed: {logs[i].read_text(errors='replace')[-2000:]}")
    if len(done_at) < count:
        raise SystemExit("workers did not finish within 30 minutes")
    for stop, thread in zip(stops, threads, strict=True):
        stop.set()
        thread.join()
    shutil.rmtree(log_dir, ignore_errors=True)
    return elapsed, max(p.get("peak_kb", 0) for p in peaks)


def loadavg() -> str:
    """The 1-minute load average: the machine is shared, so every figure carries it."""
    return Path("/proc/loadavg").read_text().split()[0]


def stock_env() -> dict[str, str]:
    """The connection environment without our own session settings (jit=off): the stock pg_dump."""
    from backups import pgtools

    env = pgtools.pg_env(pgtools.database_params())
    env["PGOPTIONS"] = os.environ.get("PGOPTIONS", "")
    return env


def stock_dumps(names: list[str], parallel: int) -> int:
    """Plain `pg_dump -Fc --schema=<s>` of each schema, `parallel` at a time; total bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from backups import pgtools

    def one(name: str) -> int:
        cmd = [pgtools.pg_binary("pg_dump"), "--format=custom", "--no-password", f"--schema={name}"]
        return len(subprocess.run(cmd, env=stock_env(), check=True, capture_output=True).stdout)

    with ThreadPoolExecutor(parallel) as pool:
        return sum(pool.map(one, names))


def timed(fn):
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def mb(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--skip-forking", action="store_true", help="Do not also time the jobs on RQ's forking worker"
    )
    args = parser.parse_args()

    from urllib.parse import urlparse

    from platform_site import devservices

    run_dir = Path(tempfile.mkdtemp(prefix="bench-backups-"))
    base_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    db_url = urlparse(base_url)._replace(path=f"/{DB_NAME}").geturl()
    redis = devservices.start_redis(run_dir / "redis")
    moto_port = devservices.free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import psycopg

    admin_url = urlparse(base_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis.url,
        DEBUG="1",
        LOG_LEVEL="WARNING",
        BACKUP_STORAGE="local",
        BACKUP_LOCAL_DIR=str(run_dir / "store"),
        CONN_MAX_AGE="0",
    )
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "platform_site.settings"
    rows = []
    try:
        import django

        django.setup()
        rows = bench(args, env, run_dir, moto_port)
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
    print(f"\n{'measure':{width}}  value")
    for name, value in rows:
        print(f"{name:{width}}  {value}")


def bench(args, env, run_dir: Path, moto_port: int) -> list[tuple[str, str]]:
    import boto3
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from backups import pgtools
    from backups.models import Backup
    from backups.services.database import database_restore, database_source
    from backups.services.drills import drill_run
    from backups.services.restore import backup_restore_as_new, backup_restore_in_place
    from backups.services.runs import backup_create, backup_run
    from core.audit import Actor
    from tenants.models import Domain, Plan, Tenant
    from tenants.services import tenant_provision

    actor = Actor.command("bench")
    rows: list[tuple[str, str]] = []

    class Rows(list):
        def append(self, row):
            print(f"{row[0]}: {row[1]}", flush=True)
            super().append(row)

    rows = Rows()
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    plan = Plan.objects.create(name="Bench", slug="bench", max_products=10_000_000)
    if args.products > 0:
        big = tenant_provision(
            subdomain="big", name="Big", plan=plan, owner_email="o@big.test", actor=actor
        ).tenant
        with pgtools.connect() as conn:
            t, _ = timed(
                lambda: conn.execute(
                    "INSERT INTO big.storefront_product (id, name, price, created_at) "
                    "SELECT gen_random_uuid(), "
                    "'Product number ' || i || ' with a realistic name', (i %% 10000) / 100.0, now() "
                    "FROM generate_series(1, %s) i",
                    [args.products],
                )
            )
            conn.commit()
            conn.execute("ANALYZE big.storefront_product")
            size = conn.execute("SELECT pg_total_relation_size('big.storefront_product')").fetchone()[0]
        print(f"inserted {args.products} products in {t:.1f} s ({mb(size)} on disk)", flush=True)
        rows.append((f"tenant size ({args.products:,} products)", mb(size)))

        # 1. Backup: stock pg_dump to a file vs our job to the local folder and to S3.
        cmd, pg_env = pgtools.dump_command(schema="big")
        pg_env = stock_env()
        stock_file = run_dir / "stock.dump"
        # Twice, keeping the faster: the first run also warms the cache for everything after it.
        stock_t = min(
            timed(lambda: subprocess.run(cmd + [f"--file={stock_file}"], env=pg_env, check=True))[0]
            for _ in range(2)
        )
        stock_size = stock_file.stat().st_size
        rows.append(
            (
                "backup 1 tenant: stock pg_dump -Fc to file",
                f"{stock_t:.2f} s, {mb(stock_size)}, {mb(stock_size / stock_t)}/s",
            )
        )
        results = {}
        for target in ("local", "s3"):
            if target == "s3":
                s3_env = {
                    "BACKUP_STORAGE": "s3",
                    "BACKUP_S3_BUCKET": "bench",
                    "BACKUP_S3_PREFIX": "b",
                    "BACKUP_S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
                    "BACKUP_S3_REGION": "us-east-1",
                    "BACKUP_S3_ACCESS_KEY_ID": "x",
                    "BACKUP_S3_SECRET_ACCESS_KEY": "x",
                }
                env.update(s3_env)
                for key, value in s3_env.items():
                    setattr(settings, key, value)
                devwait = time.monotonic() + 20
                client = boto3.client(
                    "s3",
                    endpoint_url=f"http://127.0.0.1:{moto_port}",
                    region_name="us-east-1",
                    aws_access_key_id="x",
                    aws_secret_access_key="x",
                )
                while True:
                    try:
                        client.create_bucket(Bucket="bench")
                        break
                    except Exception:
                        if time.monotonic() > devwait:
                            raise
                        time.sleep(0.2)
            backup = backup_create(kind=Backup.Kind.TENANT, tenant=big, actor=actor)
            wall, peak_kb = run_workers(1, env)
            backup.refresh_from_db()
            assert backup.status == Backup.Status.VERIFIED, backup.status_reason
            results[target] = backup
            rows.append(
                (
                    f"backup 1 tenant: ours to {target} (RQ job)",
                    f"{backup.duration_seconds:.2f} s dump+upload "
                    f"({mb(backup.size_bytes / backup.duration_seconds)}/s, "
                    f"x{backup.duration_seconds / stock_t:.2f} of stock), {wall:.2f} s job incl. verify, "
                    f"worker peak RSS {peak_kb / 1024:.0f} MB",
                )
            )

        # 2. Restore: stock pg_restore into an empty database vs ours.
        backup = results["s3"]
        with pgtools.scratch_database("bench") as scratch:
            rcmd, renv = pgtools.restore_command(dbname=scratch)
            t, _ = timed(lambda: subprocess.run(rcmd + [str(stock_file)], env=renv, check=True))
        rows.append(("restore 1 tenant: stock pg_restore into empty db", f"{t:.2f} s"))
        stock_restore = t
        drill = drill_run(backup=backup, actor=actor)
        assert drill.passed, drill.reason
        rows.append(
            (
                "restore drill (download+sha256+restore+checks): RTO",
                f"{drill.rto_seconds:.2f} s (x{drill.rto_seconds / stock_restore:.2f} of stock restore)",
            )
        )
        t, restore = timed(
            lambda: backup_restore_as_new(backup_id=backup.pk, subdomain="big-copy", actor=actor)
        )
        rows.append(("restore as new tenant (scratch db, rename, dump, restore)", f"{t:.2f} s"))
        t, restore = timed(
            lambda: backup_restore_in_place(
                tenant=big, backup_id=backup.pk, confirm="big", actor=actor
            )
        )
        rows.append(("restore in place (safety backup + copy + swap)", f"{t:.2f} s"))
        # Back to the local folder and a small database for the many-tenant part.
        for key in ("BACKUP_STORAGE",):
            env[key] = "local"
            setattr(settings, key, "local")
        connection.set_schema_to_public()
        for tenant in Tenant.objects.filter(subdomain__in=["big", "big-copy"]):
            with connection.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
            tenant.domains.all().delete()
            tenant.backups.all().delete()
            tenant.restores.all().delete()
            tenant.delete()

    if args.tenants > 0:
        # 3. Many small tenants: clone a template schema (text replace of a unique name: fine for a bench).
        tenant_provision(subdomain="zqtemplatezq", name="T", plan=plan, owner_email="o@t.test", actor=actor)
        with pgtools.connect() as conn:
            conn.execute(
                "INSERT INTO zqtemplatezq.storefront_product (id, name, price, created_at) "
                "SELECT gen_random_uuid(), 'Item ' || i, i, now() FROM generate_series(1, 20) i"
            )
            conn.commit()
        cmd, pg_env = pgtools.dump_command(schema="zqtemplatezq")
        sql_text = subprocess.run(
            [*cmd[:1], "--schema=zqtemplatezq", "--format=plain", "--no-owner"],
            env=pg_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        sql_text = "\n".join(
            line for line in sql_text.splitlines() if not line.startswith("SELECT pg_catalog.set_config")
        )
        names = [f"shop{i:04d}" for i in range(args.tenants)]
        started = time.monotonic()
        script = "SET search_path = public;\n" + "".join(sql_text.replace("zqtemplatezq", n) for n in names)
        subprocess.run(
            [pgtools.pg_binary("psql"), "-q", "-v", "ON_ERROR_STOP=1"],
            input=script,
            text=True,
            env=pgtools.pg_env(pgtools.database_params()),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tenants = Tenant.objects.bulk_create(
            [
                Tenant(
                    subdomain=n, schema_name=n, name=n, plan=plan, owner_email=f"o@{n}.test", status="active"
                )
                for n in names
            ]
        )
        Domain.objects.bulk_create(
            [
                Domain(
                    domain=f"{t.subdomain}.localhost",
                    tenant=t,
                    kind="platform",
                    status="active",
                    is_primary=True,
                )
                for t in tenants
            ]
        )
        print(f"created {args.tenants} tenants in {time.monotonic() - started:.1f} s", flush=True)
        # Stock first: W plain pg_dump processes at a time, one schema each; the floor for W workers.
        load = loadavg()
        stock_par, _ = timed(lambda: stock_dumps(names, args.workers))
        rows.append(
            (
                f"stock: pg_dump -Fc --schema per tenant, {args.workers} at a time",
                f"{stock_par:.1f} s ({args.tenants / stock_par:.1f} tenants/s), load {load} -> {loadavg()}",
            )
        )
        paths = [("ours: backups queue, BackupWorker (no fork)", BACKUP_WORKER)]
        if not args.skip_forking:
            paths.append(("before: same jobs on RQ's forking worker", FORKING_WORKER))
        for label, worker_args in paths:
            load = loadavg()
            since = timezone.now()
            for tenant in tenants:
                backup_create(kind=Backup.Kind.TENANT, tenant=tenant, actor=actor)
            wall, peak_kb = run_workers(args.workers, env, worker_args)
            batch = Backup.objects.filter(tenant__in=tenants, created_at__gte=since)
            ok = batch.filter(status=Backup.Status.VERIFIED).count()
            assert ok == args.tenants, f"only {ok} of {args.tenants} verified"
            durations = sorted(batch.values_list("duration_seconds", flat=True))
            p50 = durations[len(durations) // 2]
            # What a worker spends per job beyond the dump + upload itself.
            overhead = wall * args.workers / args.tenants - p50
            rows.append(
                (
                    f"{label}: {args.tenants} tenants, {args.workers} workers",
                    f"{wall:.1f} s ({args.tenants / wall:.1f} tenants/s, x{wall / stock_par:.2f} of stock), "
                    f"dump+upload p50 {p50:.3f} s, other per-job time {overhead:.3f} s, "
                    f"worker peak RSS {peak_kb / 1024:.0f} MB, load {load} -> {loadavg()}",
                )
            )

        # 4. Granularity: per-tenant dumps of every schema vs one whole-database dump (both stock pg_dump).
        per_t, per_bytes = timed(lambda: stock_dumps(names, 1))
        cmd, pg_env = pgtools.dump_command(schema=None)
        pg_env = stock_env()
        whole_t, whole = timed(
            lambda: subprocess.run(cmd, env=pg_env, check=True, capture_output=True).stdout
        )
        rows.append(
            (
                f"pg_dump per tenant x{args.tenants}, sequential",
                f"{per_t:.1f} s, {mb(per_bytes)} ({per_t / args.tenants * 1000:.0f} ms a tenant)",
            )
        )
        rows.append(
            (
                "pg_dump of the whole database, once",
                f"{whole_t:.1f} s, {mb(len(whole))} "
                f"(per-tenant granularity costs x{per_t / whole_t:.1f} in total time)",
            )
        )
        db = backup_create(kind=Backup.Kind.DATABASE, actor=actor, enqueue=False)
        db = backup_run(backup_id=db.pk, actor=actor)
        rows.append(
            (
                "ours: whole-database backup (manifest counts every table)",
                f"{db.duration_seconds:.1f} s, {mb(db.size_bytes)}",
            )
        )
        # Whole-database restore (RTO without PITR): stock pg_restore vs restore_database.
        whole_file = run_dir / "whole.dump"
        whole_file.write_bytes(whole)
        with pgtools.scratch_database("bench") as scratch:
            rcmd, _ = pgtools.restore_command(dbname=scratch, single_transaction=False)
            stock_restore, _ = timed(
                lambda: subprocess.run([*rcmd, str(whole_file)], env=stock_env(), check=True)
            )
        target = f"{pgtools.scratch_prefix()}whole_restored"
        source = database_source(backup_id=db.pk)
        ours, summary = timed(lambda: database_restore(source=source, target=target, actor=actor))
        pgtools.database_drop(target)
        rows.append(("stock: pg_restore of the whole database into an empty one", f"{stock_restore:.1f} s"))
        rows.append(
            (
                "ours: restore_database (sha256 + restore + row counts of every table + rename)",
                f"{ours:.1f} s (x{ours / stock_restore:.2f} of stock), {summary['tables']} tables checked",
            )
        )
    return rows


if __name__ == "__main__":
    main()
