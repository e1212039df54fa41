#!/usr/bin/env python
"""Provisioning benchmark: our warm-pool path against stock django-tenants, in the same run.

    .venv/bin/python bench/bench_provision.py [--tenants 200] [--extra-migrations 30]

Two phases, each in its own database: the code's migrations as they are, and the same plus N
no-op migrations in the tenant app (a generated copy of storefront's migrations package, picked
up through MIGRATION_MODULES). In each, one tenant at a time:

  stock  what django-tenants' create_tenant does for a Tenant with auto_create_schema: save the
         tenant, TenantMixin.create_schema(check_if_exists=True) = CREATE SCHEMA + django-tenants'
         own migrate_schemas for that schema, then the Domain row. Stock backend
         (django_tenants.postgresql_backend), stock migrate_schemas Command called directly.
  ours   tenants.services.tenant_provision (validation, tenant row, pool claim + rename, platform
         domain, owner user, audit events, route cache invalidation, pool refill enqueued), after
         tenants.schema_pool.pool_fill(size=N) filled the pool (its time is reported, not timed
         as provisioning: it runs ahead, off the request path).

Each path of each phase runs in its own long-lived Django process; they take turns in chunks
(stock before ours within a phase, so ours always meets the larger catalog), so load that drifts
during the run hits every column alike and the growth between phases is a fair comparison.
Every schema is checked for its tables afterwards, and every one of ours must come from the
pool. The databases (bench_provision, bench_provision_migrations on DATABASE_URL's server,
default postgres://postgres@127.0.0.1:5432/), the private Redis and the generated package are
removed at the end.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; the project root is what the settings need.
sys.path[0] = str(BASE_DIR)

DB_NAME = "bench_provision"
RESULT_TAG = "BENCH_RESULT "
PLAN_SLUG = "bench"


# ---------------------------------------------------------------- worker side (inside Django)


def _django_setup() -> None:
    import django

    django.setup()


def worker_setup() -> dict:
    """Shared schema with django-tenants' own migrate_schemas, and one plan."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db.migrations.loader import MigrationLoader
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

    from tenants.models import Plan

    call_command(StockMigrateSchemas(), shared=True, interactive=False, verbosity=0)
    Plan.objects.create(name="Bench", slug=PLAN_SLUG, max_products=1000)
    nodes = MigrationLoader(None, ignore_no_migrations=True).graph.nodes
    tenant_apps = {app.rsplit(".", 1)[-1] for app in settings.TENANT_APPS}
    # A tenant schema records every migration; those of the tenant apps create its tables.
    return {
        "migrations": len(nodes),
        "tenant_app_migrations": sum(1 for app, _ in nodes if app in tenant_apps),
    }


def stock_provision(subdomain: str, plan) -> None:
    """django-tenants' create_tenant for a Tenant with auto_create_schema=True, step for step."""
    from django.core.management import call_command
    from django.db import connection
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas
    from django_tenants.models import TenantMixin
    from django_tenants.signals import post_schema_sync
    from django_tenants.utils import quote_schema_name, schema_exists

    from tenants.models import Domain, Tenant
    from tenants.validation import schema_name_for

    connection.set_schema_to_public()
    tenant = Tenant(
        subdomain=subdomain, schema_name=schema_name_for(subdomain), name=subdomain.title(),
        plan=plan, owner_email=f"owner@{subdomain}.test", status=Tenant.Status.ACTIVE,
    )
    tenant.save()  # TenantMixin.save; our model has auto_create_schema off, so do its next step:
    try:
        # TenantMixin.create_schema(check_if_exists=True), with the stock command called directly.
        if not schema_exists(tenant.schema_name):
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE SCHEMA {quote_schema_name(tenant.schema_name)}")
            call_command(
                StockMigrateSchemas(), tenant=True, schema_name=tenant.schema_name,
                interactive=False, verbosity=0,
            )
        connection.set_schema_to_public()
        post_schema_sync.send(sender=TenantMixin, tenant=tenant.serializable_fields())
    except Exception:
        tenant.delete(force_drop=True)
        raise
    Domain.objects.create(
        domain=f"{subdomain}.bench.test", tenant=tenant, is_primary=True,
        kind=Domain.Kind.PLATFORM, status=Domain.Status.ACTIVE,
    )


def _tenant_schemas_ready(prefix: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'storefront_product' "
            "AND starts_with(schemaname, %s)",
            [prefix],
        )
        return cursor.fetchone()[0]


class StatementCounter:
    """Counts the SQL statements Django sends (a function call each: no measurable cost)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def worker_stock(start: int, count: int) -> dict:
    from django.db import connection

    from tenants.models import Plan

    plan = Plan.objects.get(slug=PLAN_SLUG)
    times, statements = [], []
    for i in range(start, start + count):
        counter = StatementCounter()
        with connection.execute_wrapper(counter):
            started = time.perf_counter()
            stock_provision(f"stock{i:04d}", plan)
            times.append(time.perf_counter() - started)
        statements.append(counter.count)
    return {"times": times, "statements": statements}


def worker_fill(size: int) -> dict:
    from tenants.schema_pool import pool_fill

    started = time.perf_counter()
    built = pool_fill(size=size)
    return {"pool_built": built, "pool_fill_seconds": time.perf_counter() - started}


def worker_ours(start: int, count: int) -> dict:
    from django.db import connection

    from core.audit import Actor
    from tenants.services import tenant_provision

    actor = Actor.command("bench_provision")
    times, statements, from_pool = [], [], 0
    for i in range(start, start + count):
        counter = StatementCounter()
        with connection.execute_wrapper(counter):
            started = time.perf_counter()
            result = tenant_provision(
                subdomain=f"ours{i:04d}", name=f"Ours {i}", plan=PLAN_SLUG,
                owner_email=f"owner@ours{i:04d}.test", actor=actor,
            )
            times.append(time.perf_counter() - started)
        statements.append(counter.count)
        from_pool += result.from_pool
    return {"times": times, "statements": statements, "from_pool": from_pool}


def worker_main() -> None:
    """Serve the driver's commands, one JSON line in, one result line out, until stdin closes."""
    _django_setup()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "setup":
            result = worker_setup()
        elif op == "fill":
            result = worker_fill(**command)
        elif op == "stock":
            result = worker_stock(**command)
        elif op == "ours":
            result = worker_ours(**command)
        elif op == "ready":
            result = {"ready": _tenant_schemas_ready(**command)}
        else:
            raise ValueError(f"unknown op {op!r}")
        print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver side


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def admin_conninfo(database_url: str) -> str:
    return urlparse(database_url)._replace(path="/postgres").geturl()


def recreate_databases(server_url: str, names: list[str], drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(admin_conninfo(server_url), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop_only:
                conn.execute(f'CREATE DATABASE "{name}"')


NOOP_MIGRATION = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("storefront", "{previous}")]
    operations = [{operation}]
'''


def write_extra_migrations(folder: Path, extra: int) -> str:
    """A copy of storefront's migrations plus ``extra`` no-op ones; returns the package name."""
    package = folder / "bench_extra_migrations"
    shutil.copytree(BASE_DIR / "storefront" / "migrations", package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    existing = sorted(p.stem for p in package.glob("[0-9][0-9][0-9][0-9]_*.py"))
    previous, number = existing[-1], int(existing[-1][:4])
    for i in range(1, extra + 1):
        name = f"{number + i:04d}_bench_noop_{i:02d}"
        # Half RunPython(noop), half RunSQL("SELECT 1"): the two usual shapes of a data-less step.
        operation = (
            "migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)"
            if i % 2 else 'migrations.RunSQL("SELECT 1", migrations.RunSQL.noop)'
        )
        (package / f"{name}.py").write_text(NOOP_MIGRATION.format(previous=previous, operation=operation))
        previous = name
    return package.name


class Worker:
    """A Django process under one settings stack that runs the driver's commands."""

    def __init__(self, name: str, env: dict[str, str], log: Path, script: Path | None = None):
        self.name, self.log = name, log
        script = script or Path(__file__).resolve()
        # stderr to a file: a chatty worker must never block on a full pipe.
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), "--worker"], env=env, cwd=BASE_DIR,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )

    def call(self, timeout: float, **command) -> dict:
        # A stuck command is killed, which ends the readline below.
        watchdog = threading.Timer(timeout, self.proc.kill)
        watchdog.start()
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            while line := self.proc.stdout.readline():
                if line.startswith(RESULT_TAG):
                    return json.loads(line[len(RESULT_TAG):])
        except BrokenPipeError:
            pass
        finally:
            watchdog.cancel()
        self.close()
        raise RuntimeError(
            f"{self.name} worker failed on {command} (exit {self.proc.returncode}):\n"
            + self.log.read_text()[-4000:]
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Phase:
    """One database and migration history, with a stock and an ours worker on it."""

    def __init__(self, label: str, database: str, env: dict[str, str], run_dir: Path):
        self.label, self.database = label, database
        self.stock = Worker(f"{label} stock", dict(env, BENCH_STACK="stock"),
                            run_dir / f"{database}-stock.log")
        self.ours = Worker(f"{label} ours", dict(env, BENCH_STACK="ours"), run_dir / f"{database}-ours.log")
        self.info: dict = {}
        self.runs = {"stock": {"times": [], "statements": []}, "ours": {"times": [], "statements": []}}
        self.from_pool = 0

    def run_chunk(self, start: int, count: int) -> None:
        for name, worker, per_tenant in (("stock", self.stock, 10), ("ours", self.ours, 5)):
            result = worker.call(60 + count * per_tenant, op=name, start=start, count=count)
            self.runs[name]["times"] += result["times"]
            self.runs[name]["statements"] += result["statements"]
            self.from_pool += result.get("from_pool", 0)

    def check(self, tenants: int) -> dict:
        for prefix in ("stock", "ours"):
            ready = self.ours.call(60, op="ready", prefix=prefix)["ready"]
            if ready != tenants:
                raise RuntimeError(f"{self.label} {prefix}: only {ready} of {tenants} schemas have tables")
        if self.from_pool != tenants:
            raise RuntimeError(f"{self.label}: {tenants - self.from_pool} provisions missed the warm pool")
        return {"label": self.label, **self.info, "stock": self.runs["stock"],
                "ours": {**self.runs["ours"], "from_pool": self.from_pool, **self.info["fill"]}}

    def close(self) -> None:
        self.stock.close()
        self.ours.close()


def run_phases(phases: list[Phase], tenants: int, chunk: int) -> list[dict]:
    """Every path of every phase takes turns, chunk by chunk, so drifting load hits all alike."""
    for phase in phases:
        phase.info = phase.ours.call(120, op="setup")
    for phase in phases:
        print(f"Filling the pool for {phase.label!r}: {tenants} spare schemas (not timed)", flush=True)
        phase.info["fill"] = phase.ours.call(60 + tenants * 20, op="fill", size=tenants)
    for turn, start in enumerate(range(0, tenants, chunk)):
        count = min(chunk, tenants - start)
        for phase in phases[turn % len(phases):] + phases[:turn % len(phases)]:
            phase.run_chunk(start, count)
        print(f"  {start + count}/{tenants} tenants per path and phase", flush=True)
    return [phase.check(tenants) for phase in phases]


SPEED_PROBE = "for step in range(3_000_000): pass"


def load_note() -> str:
    """The load, and how fast the machine runs plain Python right now, one process per core at
    once: the same VM has run the same code 2.5x apart from one hour to the next, so a figure
    needs this beside it to be compared."""
    one, five, fifteen = os.getloadavg()
    started = time.perf_counter()
    probes = [subprocess.Popen([sys.executable, "-c", SPEED_PROBE]) for _ in range(os.cpu_count() or 1)]
    for probe in probes:
        probe.wait()
    probe_ms = (time.perf_counter() - started) * 1000
    return (f"load average {one:.1f} / {five:.1f} / {fifteen:.1f}, {len(probes)} x a 3M-step "
            f"Python loop at once {probe_ms:.0f} ms")


def machine_note(database_url: str) -> str:
    import django
    import psycopg

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(admin_conninfo(database_url)) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} cores ({cpu}), PostgreSQL {server} on loopback, Python "
        f"{sys.version.split()[0]}, Django {django.get_version()}, "
        f"django-tenants {version('django-tenants')}, psycopg {psycopg.__version__}"
    )


def print_table(machine: str, phases: list[dict], tenants: int) -> None:
    ms = lambda s: f"{s * 1000:8.1f}"  # noqa: E731
    print(f"\nProvisioning {tenants} tenants, one at a time - {machine}\n")
    header = (f"{'phase':<26} {'path':<6} {'migr':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
              f" {'total s':>8} {'SQL stmts':>9}")
    print(header)
    print("-" * len(header))
    for phase in phases:
        for path in ("stock", "ours"):
            t = phase[path]["times"]
            stmts = percentile(phase[path]["statements"], 50)
            print(f"{phase['label']:<26} {path:<6} {phase['migrations']:>4} {ms(percentile(t, 50))}"
                  f" {ms(percentile(t, 95))} {ms(max(t))} {sum(t):8.2f} {stmts:9d}")
        s, o = phase["stock"]["times"], phase["ours"]["times"]
        print(f"{'':<26} {'ratio':<6} {'':>4} {percentile(s, 50) / percentile(o, 50):7.1f}x"
              f" {percentile(s, 95) / percentile(o, 95):7.1f}x {max(s) / max(o):7.1f}x"
              f"   (stock / ours)")
        built, seconds = phase["ours"]["pool_built"], phase["ours"]["pool_fill_seconds"]
        print(f"{'':<26} pool filled ahead of time: {built} spare schemas in {seconds:.1f} s "
              f"({seconds / max(1, built) * 1000:.0f} ms each, off the request path)")
    if len(phases) == 2:
        a, b = phases
        for path in ("stock", "ours"):
            growth = percentile(b[path]["times"], 50) / percentile(a[path]["times"], 50)
            print(f"p50 growth with +{b['migrations'] - a['migrations']} migrations, {path}: {growth:.2f}x")
    print("\nmigr: migrations recorded in each tenant schema; SQL stmts: median statements Django sent"
          " per provision (BEGIN/COMMIT not counted)")
    our_p50 = max(percentile(p["ours"]["times"], 50) for p in phases)
    print(f"\nTarget ours p50 < 25 ms: {'met' if our_p50 < 0.025 else 'NOT met'} ({our_p50 * 1000:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200, help="tenants per path and phase")
    parser.add_argument("--extra-migrations", type=int, default=30,
                        help="no-op migrations added to the tenant app in the second phase (0: skip)")
    parser.add_argument("--chunk", type=int, default=20,
                        help="tenants per turn as stock and ours take turns")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return
    if not 1 <= args.tenants <= 5000:
        parser.error("--tenants must be between 1 and 5000")
    if not 1 <= args.chunk <= args.tenants:
        parser.error("--chunk must be between 1 and --tenants")
    if not 0 <= args.extra_migrations <= 500:
        parser.error("--extra-migrations must be between 0 and 500")

    from platform_site import devservices

    server_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    if not devservices.postgres_answers(server_url):
        sys.exit(f"PostgreSQL at {urlparse(server_url).netloc} does not answer; set DATABASE_URL.")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-provision-"))
    redis = devservices.start_redis(run_dir / "redis")
    base_env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="bench.settings", REDIS_URL=redis.url,
        SECRET_KEY="bench-only", DEBUG="0", LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(BASE_DIR), str(run_dir)]),
    )
    base_env.pop("BENCH_MIGRATION_MODULE", None)
    specs = [("as shipped", DB_NAME, {})]
    if args.extra_migrations:
        package = write_extra_migrations(run_dir, args.extra_migrations)
        specs.append((f"+{args.extra_migrations} no-op migrations", f"{DB_NAME}_migrations",
                      {"BENCH_MIGRATION_MODULE": package}))
    databases = [database for _, database, _ in specs]
    machine, load_before = machine_note(server_url), load_note()
    results, phases, failure = [], [], None
    try:
        recreate_databases(server_url, databases)
        for label, database, extra_env in specs:
            url = urlparse(server_url)._replace(path=f"/{database}").geturl()
            phases.append(Phase(label, database, dict(base_env, DATABASE_URL=url, **extra_env), run_dir))
        results = run_phases(phases, args.tenants, args.chunk)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        failure = exc
    finally:
        for phase in phases:
            phase.close()
        recreate_databases(server_url, databases, drop_only=True)
        redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    if failure:
        sys.exit(f"bench_provision failed: {failure}")
    # Other work on the machine skews absolute figures; the ratios are what to compare.
    machine += f"; {load_before} at start, {load_note()} at end"
    print_table(machine, results, args.tenants)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "phases": results}, indent=1))


if __name__ == "__main__":
    main()
