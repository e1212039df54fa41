#!/usr/bin/env python
"""Routing benchmark: requests/s of the tenant storefront page against the same page without tenancy.

    .venv/bin/python bench/bench_routing.py [--tenants 10] [--products 20] [--rounds 21] [--duration 2]

Three stacks, each its own gunicorn (2 workers, gthread with 1 thread each so that connections
are kept alive) on a loopback port, each on its own database so that PostgreSQL's own counters
tell how many transactions each request cost:

  plain  stock Django, no tenancy: the same view and template over a plain table in public
  stock  django-tenants as shipped: TenantMainMiddleware + django_tenants.postgresql_backend
  ours   tenants.middleware.TenantRoutingMiddleware + platform_site.db (the project as shipped)

wrk (1 thread, persistent connections) rotates the Host header over the tenants' hosts. Rounds
run the stacks one after another in a rotating order; the table reports medians, and each
stack's ratio to plain as the median of per-round ratios (runs close in time). Beside req/s it
reports CPU time per request of the gunicorn workers and of their PostgreSQL backends (from
/proc), which a machine shared with other work skews far less than throughput.

Queries per warm request are counted apart (the timed servers run without the counting
middleware): Django-level statements through bench.middleware.QueryCountMiddleware, and server
round trips from pg_stat_database (each simple-protocol message is one transaction there, so
ours' "SET search_path ...; SELECT ..." counts once). Everything started here (Redis, gunicorn,
databases) is stopped or dropped at the end.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

STACKS = ("plain", "stock", "ours")
DB_PREFIX = "bench_routing_"
RESULT_TAG = "BENCH_RESULT "
BASE_DOMAIN = "localhost"

WRK_SCRIPT = """
local hosts = {%(hosts)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["Host"] = hosts[(n %% #hosts) + 1]})
end
done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH_WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, "
    .. "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def host(i: int) -> str:
    return f"shop{i}.{BASE_DOMAIN}"


def product_rows(count: int) -> list[tuple[str, str]]:
    return [(f"Product {i:03d}", f"{(i * 7) % 90 + 9}.99") for i in range(count)]


# ---------------------------------------------------------------- worker side (inside Django)


def worker_setup_tenants(tenants: int, products: int) -> dict:
    """Shared schema (django-tenants' own migrate_schemas), tenants provisioned our way, products."""
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

    from core.audit import Actor
    from storefront.models import Product
    from tenants.models import Plan
    from tenants.schema_pool import pool_fill
    from tenants.services import tenant_provision

    call_command(StockMigrateSchemas(), shared=True, interactive=False, verbosity=0)
    Plan.objects.create(name="Bench", slug="bench", max_products=max(products, 1))
    pool_fill(size=tenants)
    actor = Actor.command("bench_routing")
    for i in range(tenants):
        tenant = tenant_provision(
            subdomain=f"shop{i}", name=f"Shop {i}", plan="bench", owner_email=f"owner@shop{i}.test",
            actor=actor,
        ).tenant
        connection.set_tenant(tenant)
        Product.objects.bulk_create(
            Product(name=name, price=Decimal(price)) for name, price in product_rows(products)
        )
        connection.set_schema_to_public()
    return {"tenants": tenants}


def worker_setup_plain(products: int) -> dict:
    from decimal import Decimal

    from django.core.management import call_command

    from storefront.models import Product

    call_command("migrate", interactive=False, verbosity=0)
    Product.objects.bulk_create(
        Product(name=name, price=Decimal(price)) for name, price in product_rows(products)
    )
    return {"products": Product.objects.count()}


def worker_count(tenants: int, products: int) -> dict:
    """Statements per request, cold and warm, through the full middleware stack."""
    from django.test import Client

    stack = os.environ["BENCH_STACK"]
    client = Client()
    samples = []
    for i in range(min(tenants, 3)):
        for attempt in ("first", "warm", "warm"):
            response = client.get("/", HTTP_HOST=host(i))
            body = response.content.decode()
            if response.status_code != 200:
                raise RuntimeError(f"{stack}: {host(i)} answered {response.status_code}")
            shown = body.count('class="product"')
            if shown != products:
                raise RuntimeError(f"{stack}: {host(i)} listed {shown} products, not {products}")
            if stack != "plain" and f'data-shop="shop{i}"' not in body:
                raise RuntimeError(f"{stack}: {host(i)} rendered another shop's page")
            samples.append({
                "host": host(i), "request": attempt,
                "queries": int(response["X-Bench-Queries"]),
                "statements": json.loads(response["X-Bench-Statements"]),
            })
    warm = [s["queries"] for s in samples if s["request"] == "warm"]
    return {"samples": samples, "warm_queries": max(warm)}


def worker_main(args: argparse.Namespace) -> None:
    import django

    django.setup()
    if args.worker == "setup-tenants":
        result = worker_setup_tenants(args.tenants, args.products)
    elif args.worker == "setup-plain":
        result = worker_setup_plain(args.products)
    else:
        result = worker_count(args.tenants, args.products)
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver side


def admin_url(server_url: str) -> str:
    return urlparse(server_url)._replace(path="/postgres").geturl()


def db_url(server_url: str, stack: str) -> str:
    return urlparse(server_url)._replace(path=f"/{DB_PREFIX}{stack}").geturl()


def admin_sql(server_url: str, *statements: str) -> list:
    import psycopg

    with psycopg.connect(admin_url(server_url), autocommit=True) as conn:
        rows = []
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else rows
        return rows


def run_worker(mode: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode,
           "--tenants", str(args.tenants), "--products", str(args.products)]
    proc = subprocess.run(cmd, env=env, cwd=BASE_DIR, capture_output=True, text=True,
                          timeout=120 + args.tenants * 5)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"worker {mode} printed no result:\n{proc.stderr[-2000:]}")


def xacts(server_url: str) -> dict[str, int]:
    rows = admin_sql(
        server_url,
        "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database "
        f"WHERE starts_with(datname, '{DB_PREFIX}')",
    )
    return {name[len(DB_PREFIX):]: count for name, count in rows}


class Server:
    """One gunicorn (2 workers) for one stack; counts every request sent to it."""

    def __init__(self, stack: str, env: dict[str, str], run_dir: Path, connections: int):
        from platform_site.devservices import free_port

        self.stack, self.port = stack, free_port()
        self.requests = 0
        self.log = run_dir / f"gunicorn-{stack}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "platform_site.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--worker-class", "gthread",
             "--threads", "1", "--keep-alive", "120", "--log-level", "warning",
             # Each worker holds at most half of wrk's connections (+1): left alone, the first
             # worker to wake often accepted all of them and the other one sat idle.
             "--worker-connections", str(connections // 2 + 1),
             "--error-logfile", str(self.log)],
            cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.stack}) exited:\n{self.log.read_text()[-3000:]}")
            request = urllib.request.Request(self.url, headers={"Host": host(0)})
            try:
                self.requests += 1
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn ({self.stack}) did not answer 200 within {timeout:.0f} s")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (0 for any that has gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def backend_pids(server_url: str, stack: str) -> list[int]:
    rows = admin_sql(
        server_url,
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
        f"AND datname = '{DB_PREFIX}{stack}'",
    )
    return [pid for (pid,) in rows]


def run_wrk(server: Server, script: Path, args: argparse.Namespace, duration: float,
            server_url: str) -> dict:
    # CPU time is measured alongside: far steadier than req/s on a machine shared with others.
    app_pids, db_pids = server.worker_pids(), backend_pids(server_url, server.stack)
    app_each, db_cpu = [cpu_seconds([pid]) for pid in app_pids], cpu_seconds(db_pids)
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(script), server.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_WRK ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed on {server.stack}:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(line[len("BENCH_WRK "):])
    server.requests += result["requests"]
    errors = {k: result[k] for k in ("connect", "read", "write", "status", "timeout") if result[k]}
    if errors:
        raise RuntimeError(f"wrk saw errors on {server.stack}: {errors}\n{server.log.read_text()[-3000:]}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    used = [cpu_seconds([pid]) - before for pid, before in zip(app_pids, app_each, strict=True)]
    result["app_cpu_us"] = sum(used) / result["requests"] * 1e6
    # Both workers must have carried the load (each holds its own keep-alive connections).
    result["busiest_worker_share"] = max(used) / sum(used) if sum(used) else 1.0
    if result["busiest_worker_share"] > 0.7:
        print(f"  warning: one {server.stack} worker did {result['busiest_worker_share']:.0%} of the work",
              flush=True)
    # A backend that was replaced mid-run took its CPU time with it: no figure then.
    same_backends = set(backend_pids(server_url, server.stack)) == set(db_pids)
    result["db_cpu_us"] = (
        (cpu_seconds(db_pids) - db_cpu) / result["requests"] * 1e6 if same_backends else None
    )
    return result


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f}"


def machine_note(server_url: str) -> str:
    import django
    import psycopg

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    server = admin_sql(server_url, "SHOW server_version")[0][0]
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} cores ({cpu}), PostgreSQL {server}, Python {sys.version.split()[0]}, "
        f"Django {django.get_version()}, django-tenants {version('django-tenants')}, "
        f"psycopg {psycopg.__version__}, gunicorn {version('gunicorn')}, wrk 4.1, all on loopback"
    )


def quartiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]


def _median_known(values) -> float:
    # PostgreSQL CPU is unknown for a round whose backends ended before they were read (tiny runs).
    known = list(values)
    return median(known) if known else float("nan")


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Medians per stack; ratios to plain are medians of per-round ratios (runs close in time)."""
    out = {}
    for stack in STACKS:
        runs, plain = rounds[stack], rounds["plain"]
        out[stack] = {
            "rps": median(r["rps"] for r in runs),
            "rps_of_plain": median(r["rps"] / p["rps"] for r, p in zip(runs, plain, strict=True)),
            "rps_of_plain_iqr": quartiles([r["rps"] / p["rps"] for r, p in zip(runs, plain, strict=True)]),
            "app_cpu_us": median(r["app_cpu_us"] for r in runs),
            "db_cpu_us": _median_known(r["db_cpu_us"] for r in runs if r["db_cpu_us"] is not None),
            "cpu_of_plain": _median_known(
                (r["app_cpu_us"] + r["db_cpu_us"]) / (p["app_cpu_us"] + p["db_cpu_us"])
                for r, p in zip(runs, plain, strict=True)
                if r["db_cpu_us"] is not None and p["db_cpu_us"] is not None
            ),
            "p50_ms": median(r["p50_us"] for r in runs) / 1000,
            "p99_ms": median(r["p99_us"] for r in runs) / 1000,
        }
    return out


def print_table(machine, args, summary, counts, round_trips) -> None:
    print(f"\nTenant routing - {machine}")
    print(f"gunicorn 2 workers (gthread, 1 thread, at most {args.connections // 2 + 1} connections each), "
          f"wrk -t1 -c{args.connections} -d{args.duration}s "
          f"over {args.tenants} hosts, {args.products} products a page, {args.rounds} rounds; "
          "medians; 'of plain' = median of per-round ratios\n")
    header = (f"{'stack':<6} {'req/s':>6} {'of plain':>8} {'app CPU us/req':>14} {'db CPU us/req':>13} "
              f"{'CPU vs plain':>12} {'p50 ms':>7} {'p99 ms':>7} {'queries/warm req':>16} "
              f"{'round trips/req':>15}")
    print(header)
    print("-" * len(header))
    for stack in STACKS:
        m = summary[stack]
        print(f"{stack:<6} {m['rps']:6.0f} {m['rps_of_plain']:8.1%} {m['app_cpu_us']:14.0f} "
              f"{m['db_cpu_us']:13.0f} {m['cpu_of_plain']:12.1%} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f} "
              f"{counts[stack]['warm_queries']:16d} {round_trips[stack]:15.2f}")
    for stack in ("stock", "ours"):
        low, high = summary[stack]["rps_of_plain_iqr"]
        print(f"{stack}: per-round req/s ratio to plain, interquartile range {low:.1%} - {high:.1%}")
    ours = summary["ours"]["rps_of_plain"]
    print(f"\nTarget ours >= 95% of plain req/s: {'met' if ours >= 0.95 else 'NOT met'} ({ours:.1%}); "
          f"1 query per warm request: {'met' if counts['ours']['warm_queries'] == 1 else 'NOT met'} "
          f"({counts['ours']['warm_queries']})")
    print("\nStatements of one warm request, as sent (round trips also count Django's per-request "
          "connection health check, CONN_HEALTH_CHECKS, the same for every stack):")
    for stack in STACKS:
        warm = next(s for s in counts[stack]["samples"] if s["request"] == "warm")
        for statement in warm["statements"]:
            print(f"  {stack:<6} {statement[:130]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=10, help="tenants (hosts) to rotate over")
    parser.add_argument("--products", type=int, default=20, help="products on each page")
    parser.add_argument("--rounds", type=int, default=21, help="timed runs per stack")
    parser.add_argument("--duration", type=int, default=2,
                        help="seconds per timed run (short runs, many rounds: pairs close in time)")
    parser.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of untimed load per stack first")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", choices=("setup-tenants", "setup-plain", "count"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    for name, low, high in (("tenants", 1, 500), ("products", 0, 200), ("rounds", 1, 100),
                            ("duration", 1, 300), ("connections", 4, 256), ("warmup", 1, 60)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")
    if args.connections % 2:
        parser.error("--connections must be even (half for each gunicorn worker)")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: run scripts/setup (Debian package wrk).")

    from platform_site import devservices

    server_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    if not devservices.postgres_answers(server_url):
        sys.exit(f"PostgreSQL at {urlparse(server_url).netloc} does not answer; set DATABASE_URL.")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    redis = devservices.start_redis(run_dir / "redis")
    base_env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="bench.settings", REDIS_URL=redis.url,
        SECRET_KEY="bench-only", DEBUG="0", SECURE_SSL_REDIRECT="0", LOG_LEVEL="WARNING",
        PYTHONPATH=str(BASE_DIR),
        # Persistent database connections that outlive the run, so that no reconnect (and no
        # new backend process) lands inside a timed run.
        CONN_MAX_AGE="3600",
    )
    for key in ("BENCH_COUNT_QUERIES", "BENCH_MIGRATION_MODULE"):
        base_env.pop(key, None)
    envs = {s: dict(base_env, BENCH_STACK=s, DATABASE_URL=db_url(server_url, s)) for s in STACKS}
    drop = [f'DROP DATABASE IF EXISTS "{DB_PREFIX}{s}" WITH (FORCE)' for s in STACKS]
    servers: dict[str, Server] = {}
    try:
        machine = machine_note(server_url)
        load_before = load_note()
        print(f"Setting up {args.tenants} tenants with {args.products} products each", flush=True)
        admin_sql(server_url, *drop, *(f'CREATE DATABASE "{DB_PREFIX}{s}"' for s in ("ours", "plain")))
        run_worker("setup-tenants", envs["ours"], args)
        # The same tenants for stock: a byte-for-byte copy of ours' database.
        admin_sql(server_url, f'CREATE DATABASE "{DB_PREFIX}stock" TEMPLATE "{DB_PREFIX}ours"')
        run_worker("setup-plain", envs["plain"], args)

        print("Counting statements per request", flush=True)
        counts = {s: run_worker("count", dict(envs[s], BENCH_COUNT_QUERIES="1"), args) for s in STACKS}

        script = run_dir / "rotate.lua"
        script.write_text(WRK_SCRIPT % {"hosts": ", ".join(f'"{host(i)}"' for i in range(args.tenants))})
        before = xacts(server_url)
        for stack in STACKS:
            servers[stack] = Server(stack, envs[stack], run_dir, args.connections)
        for server in servers.values():
            server.wait_ready()
            # Warm-up: imports, templates, database connections (whose pids are then stable).
            run_wrk(server, script, args, duration=args.warmup, server_url=server_url)
        rounds: dict[str, list[dict]] = {s: [] for s in STACKS}
        for r in range(args.rounds):
            order = STACKS[r % 3:] + STACKS[:r % 3]
            for stack in order:
                result = run_wrk(servers[stack], script, args, duration=args.duration,
                                 server_url=server_url)
                rounds[stack].append(result)
                db_us = "n/a" if result["db_cpu_us"] is None else f"{result['db_cpu_us']:.0f}"
                print(f"  round {r + 1:2d} {stack:<6} {result['rps']:6.0f} req/s, app "
                      f"{result['app_cpu_us']:5.0f} us + db {db_us:>5} us CPU a request", flush=True)
        for server in servers.values():
            server.stop()
        served = {s: servers[s].requests for s in STACKS}
        # Backends flush their counters when they exit; wait for the servers' ones to go.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and admin_sql(
            server_url,
            f"SELECT 1 FROM pg_stat_activity WHERE starts_with(datname, '{DB_PREFIX}') LIMIT 1",
        ):
            time.sleep(0.2)
        time.sleep(0.5)
        after = xacts(server_url)
        round_trips = {s: (after[s] - before[s]) / served[s] for s in STACKS}
    finally:
        for server in servers.values():
            server.stop()
        admin_sql(server_url, *drop)
        redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    summary = summarise(rounds)
    # Other work on the machine skews absolute figures; the ratios are what to compare.
    machine += f"; {load_before} at start, {load_note()} at end"
    print_table(machine, args, summary, counts, round_trips)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "summary": summary, "rounds": rounds, "counts": counts,
             "round_trips": round_trips, "served": served}, indent=1))


if __name__ == "__main__":
    main()
