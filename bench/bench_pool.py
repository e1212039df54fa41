#!/usr/bin/env python
"""Spare schemas for the pool: replaying captured SQL against running the migrations, and a burst.

    .venv/bin/python bench/bench_pool.py [--spares 30] [--batch 5] [--burst 1000] [--burst-migrate 100]

Part 1, one spare, in one long-lived Django process, the paths taking turns spare by spare:

  migrate  tenants.schema_pool.pool_schema_migrate(): CREATE SCHEMA + our migrate_schemas for it
           (how every spare was built before; TENANT_SCHEMA_POOL_REPLAY=0 still does it);
  replay   pool_spares_build(count=1, batch=1): the captured script, one spare per transaction;
  batched  pool_spares_build(count=B, batch=B): B spares per transaction (the refill job's way).

The capture itself (migrate a schema while recording, read its rows, replay and compare the
catalogs) is timed once and reported apart: it happens once per migration state.

Part 2, a burst of signups: the pool starts at TENANT_SCHEMA_POOL_SIZE (5) ready spares, a real
``manage.py rqworker default`` runs the refill jobs, and --clients processes provision shops back
to back through tenants.services.tenant_provision (what the admin, the command and an API call
run), N in all. Reported: wall time, shops per second, p50/p95 of one provisioning, and how many
found the pool empty and built their spare on the spot. Once with replay (N = --burst) and once
with the migrations (TENANT_SCHEMA_POOL_REPLAY=0, N = --burst-migrate: that path is slow).
Every shop made is checked to be active. Database bench_pool on DATABASE_URL's server, a private
Redis; both removed at the end.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from bench.bench_provision import (  # noqa: E402
    RESULT_TAG,
    Worker,
    load_note,
    machine_note,
    percentile,
    recreate_databases,
)

DB_NAME = "bench_pool"
PLAN_SLUG = "bench"


# ---------------------------------------------------------------- worker side (inside Django)


def worker_setup() -> dict:
    from django.core.management import call_command

    from tenants.models import Plan

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    Plan.objects.create(name="Bench", slug=PLAN_SLUG, max_products=1000)
    return {}


def worker_capture() -> dict:
    from tenants import schema_template
    from tenants.models import SchemaTemplate

    SchemaTemplate.objects.all().delete()
    schema_template._loaded.clear()
    started = time.perf_counter()
    template, built = schema_template.template_capture()
    if template is None:
        raise RuntimeError("the migrations were refused for replay: " + schema_template.template_refused())
    return {"capture_seconds": time.perf_counter() - started, "ddl_statements": template.statements,
            "script_bytes": len(template.script), "built": len(built)}


def worker_spares(count: int, batch: int) -> dict:
    from tenants.schema_pool import pool_schema_migrate, pool_spares_build

    times: dict[str, list[float]] = {"migrate": [], "replay": [], "batched": []}
    for _ in range(count):
        started = time.perf_counter()
        pool_schema_migrate()
        times["migrate"].append(time.perf_counter() - started)
        started = time.perf_counter()
        pool_spares_build(count=1, batch=1)
        times["replay"].append(time.perf_counter() - started)
        started = time.perf_counter()
        pool_spares_build(count=batch, batch=batch)
        times["batched"].append((time.perf_counter() - started) / batch)
    return times


def worker_pool_reset(size: int) -> dict:
    """Exactly ``size`` ready spares, an empty queue, no refill pending."""
    import django_rq

    from core.db import connection
    from tenants import jobs
    from tenants.models import SchemaPoolEntry
    from tenants.schema_pool import _drop_schema, pool_fill

    connection.set_schema_to_public()
    for entry in SchemaPoolEntry.objects.all():
        _drop_schema(entry.schema_name)
        entry.delete()
    django_rq.get_queue("default").empty()
    django_rq.get_connection("default").delete(jobs.POOL_REFILL_QUEUED)
    return {"built": pool_fill(size=size)}


def worker_warm() -> dict:
    from tenants.models import Tenant
    from tenants.schema_template import template_current

    template_current()
    return {"tenants": Tenant.objects.count()}


def worker_burst(prefix: str, count: int) -> dict:
    from core.audit import Actor
    from tenants.services import tenant_provision

    actor = Actor.command("bench_pool")
    times, from_pool = [], 0
    for i in range(count):
        started = time.perf_counter()
        result = tenant_provision(subdomain=f"{prefix}-{i:04d}", name=f"{prefix} {i}", plan=PLAN_SLUG,
                                  owner_email=f"owner@{prefix}-{i:04d}.test", actor=actor)
        times.append(time.perf_counter() - started)
        from_pool += result.from_pool
    return {"times": times, "from_pool": from_pool}


def worker_rq_workers() -> dict:
    import django_rq
    from rq import Worker as RQWorker

    return {"workers": len(RQWorker.all(connection=django_rq.get_connection("default")))}


def worker_census(prefix: str) -> dict:
    from tenants.models import SchemaPoolEntry, Tenant

    return {
        "active": Tenant.objects.filter(subdomain__startswith=prefix, status="active").count(),
        "ready": SchemaPoolEntry.objects.filter(status="ready").count(),
    }


OPS = {"setup": worker_setup, "capture": worker_capture, "spares": worker_spares,
       "pool_reset": worker_pool_reset, "warm": worker_warm, "burst": worker_burst, "census": worker_census,
       "rq_workers": worker_rq_workers}


def worker_main() -> None:
    import django

    django.setup()
    for line in sys.stdin:
        command = json.loads(line)
        result = OPS[command.pop("op")](**command)
        print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver side


def run_burst(label: str, replay: bool, shops: int, clients: int, env: dict, run_dir: Path,
              admin: Worker, pool_size: int) -> dict:
    path_env = dict(env, TENANT_SCHEMA_POOL_REPLAY="1" if replay else "0")
    admin.call(120 + pool_size * 10, op="pool_reset", size=pool_size)
    with (run_dir / f"rqworker-{label}.log").open("w") as log:
        rqworker = subprocess.Popen([sys.executable, "manage.py", "rqworker", "default"], env=path_env,
                                    cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
    members = [Worker(f"{label} client {c}", path_env, run_dir / f"client-{label}-{c}.log",
                      script=Path(__file__).resolve()) for c in range(clients)]
    results: list[dict] = []
    errors: list[BaseException] = []
    try:
        for member in members:
            member.call(120, op="warm")
        deadline = time.monotonic() + 120
        while admin.call(30, op="rq_workers")["workers"] < 1:  # the refill worker is up
            if time.monotonic() > deadline or rqworker.poll() is not None:
                raise RuntimeError(f"the rqworker for {label} did not start")
            time.sleep(0.2)
        shares = [shops // clients + (1 if c < shops % clients else 0) for c in range(clients)]

        def client(member: Worker, c: int) -> None:
            try:
                results.append(member.call(60 + shares[c] * 30, op="burst", prefix=f"{label}{c}",
                                           count=shares[c]))
            except BaseException as exc:  # reported below, after the other clients finished
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(m, c)) for c, m in enumerate(members) if shares[c]]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        for member in members:
            member.close()
        rqworker.send_signal(signal.SIGTERM)
        try:
            rqworker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rqworker.kill()
            rqworker.wait()
    if errors:
        raise RuntimeError(f"burst {label}: {errors[0]}")
    census = admin.call(60, op="census", prefix=label)
    if census["active"] != shops:
        raise RuntimeError(f"burst {label}: {census['active']} of {shops} shops active")
    times = [t for r in results for t in r["times"]]
    return {"label": label, "shops": shops, "clients": clients, "wall": wall, "times": times,
            "from_pool": sum(r["from_pool"] for r in results), "ready_after": census["ready"]}


def print_tables(machine: str, capture: dict, spares: dict, batch: int, bursts: list[dict]) -> None:
    ms = lambda s: f"{s * 1000:9.1f}"  # noqa: E731
    print(f"\nSchema pool - {machine}\n")
    print(f"Capture (once per migration state): {capture['capture_seconds'] * 1000:.0f} ms, "
          f"{capture['ddl_statements']} DDL statements, script {capture['script_bytes'] / 1024:.0f} KiB\n")
    print("| path | spares | p50 ms | p95 ms | max ms | migrate / path (p50) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = percentile(spares["migrate"], 50)
    names = {"migrate": "migrations (before)", "replay": "replay, 1 per transaction",
             "batched": f"replay, {batch} per transaction"}
    for path, label in names.items():
        t = spares[path]
        count = len(t) * (batch if path == "batched" else 1)
        print(f"| {label} | {count} | {ms(percentile(t, 50))} | {ms(percentile(t, 95))} | {ms(max(t))} "
              f"| {base / percentile(t, 50):.1f}x |")
    print("\n| burst | shops | clients | wall s | shops/s | p50 ms | p95 ms | built on the spot "
          "| ready after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in bursts:
        t = b["times"]
        rate = b["shops"] / b["wall"]
        print(f"| {b['label']} | {b['shops']} | {b['clients']} | {b['wall']:.1f} | {rate:.1f} "
              f"| {ms(percentile(t, 50))} | {ms(percentile(t, 95))} | {b['shops'] - b['from_pool']} "
              f"| {b['ready_after']} |")
    replay = percentile(spares["replay"], 50)
    print(f"\nTarget one spare < 50 ms: {'met' if replay < 0.05 else 'NOT met'} ({replay * 1000:.1f} ms p50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spares", type=int, default=30, help="spares per path in part 1")
    parser.add_argument("--batch", type=int, default=5, help="spares per transaction, batched path")
    parser.add_argument("--burst", type=int, default=1000, help="shops in the burst with replay")
    parser.add_argument("--burst-migrate", type=int, default=100, help="shops in the burst with migrations")
    parser.add_argument("--clients", type=int, default=2, help="processes provisioning side by side")
    parser.add_argument("--pool-size", type=int, default=5, help="ready spares when the burst starts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return
    for name, low, high in (("spares", 1, 1000), ("batch", 1, 100), ("burst", 0, 10000),
                            ("burst_migrate", 0, 5000), ("clients", 1, 16), ("pool_size", 0, 100)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be between {low} and {high}")

    from platform_site import devservices

    server_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    if not devservices.postgres_answers(server_url):
        sys.exit(f"PostgreSQL at {urlparse(server_url).netloc} does not answer; set DATABASE_URL.")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    redis = devservices.start_redis(run_dir / "redis")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="bench.settings", REDIS_URL=redis.url, BENCH_STACK="ours",
               SECRET_KEY="bench-only", DEBUG="0", LOG_LEVEL="WARNING", PYTHONPATH=str(BASE_DIR),
               DATABASE_URL=urlparse(server_url)._replace(path=f"/{DB_NAME}").geturl(),
               TENANT_SCHEMA_POOL_SIZE=str(args.pool_size))
    env.pop("BENCH_MIGRATION_MODULE", None)
    machine, load_before = machine_note(server_url), load_note()
    admin, failure, bursts = None, None, []
    try:
        recreate_databases(server_url, [DB_NAME])
        admin = Worker("admin", env, run_dir / "admin.log", script=Path(__file__).resolve())
        admin.call(180, op="setup")
        capture = admin.call(300, op="capture")
        print(f"Building {args.spares} spares per path, taking turns", flush=True)
        spares = admin.call(120 + args.spares * 30, op="spares", count=args.spares, batch=args.batch)
        for label, replay, shops in (("replay", True, args.burst), ("migrate", False, args.burst_migrate)):
            if shops:
                print(f"Burst of {shops} signups, spares by {label}", flush=True)
                bursts.append(
                    run_burst(label, replay, shops, args.clients, env, run_dir, admin, args.pool_size)
                )
    except (RuntimeError, subprocess.SubprocessError) as exc:
        failure = exc
    finally:
        if admin:
            admin.close()
        recreate_databases(server_url, [DB_NAME], drop_only=True)
        redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    if failure:
        sys.exit(f"bench_pool failed: {failure}")
    machine += f"; {load_before} at start, {load_note()} at end"
    print_tables(machine, capture, spares, args.batch, bursts)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "capture": capture, "spares": spares,
                                               "bursts": bursts}, indent=1))


if __name__ == "__main__":
    main()
