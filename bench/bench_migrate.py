#!/usr/bin/env python
"""migrate_schemas across many schemas: ours against django-tenants' stock command, same run.

    .venv/bin/python bench/bench_migrate.py [--sizes 200 1000] [--stock-max 1000] [--workers 2]

For each size N it times, over N tenant schemas (plus the public schema, as the commands do):

  no-op        everything is up to date;
  migration    one trivial new migration in the tenant app (AddField with a constant default on
               storefront.Product), added through a temporary migrations package.

with three commands, each called in-process through call_command (so Python start-up and system
checks are not counted; they are the same for all three):

  ours         tenants' migrate_schemas (--workers W);
  stock std    django-tenants' migrate_schemas --executor standard;
  stock mp     django-tenants' migrate_schemas --executor multiprocessing
               (TENANT_MULTIPROCESSING_MAX_PROCESSES, default 2 = the same number of processes).

After each migration run every schema is checked (fingerprint = the code's migrations) and the
migration is undone with plain SQL (drop the column, delete the record) for the next command.
Ours is also timed once as a command line (`manage.py migrate_schemas`, no-op) with start-up.

Schemas: one template schema is migrated by the stock command, dumped with pg_dump and restored
under each tenant's name (same tables, constraints, indexes and rows as a migrated schema; much
faster than migrating each). Database: ``bench_migrate`` on DATABASE_URL's server, dropped at
the end unless --keep.
"""

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

DB_NAME = "bench_migrate"
TEMPLATE = "bench_template"
MIGRATION = "0002_bench_note"


def database_urls() -> tuple[str, str]:
    server = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/platform"))
    return urlunparse(server._replace(path="/postgres")), urlunparse(server._replace(path=f"/{DB_NAME}"))


def recreate_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def drop_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def schema_name(i: int) -> str:
    return f"bench_{i:04d}"


# ------------------------------------------------------------------------------ setup


def setup_public_and_template() -> str:
    """Public schema, a plan, and the template schema; returns the template's dump."""
    from django.core.management import call_command
    from django.db import connection
    from django_tenants.management.commands.migrate_schemas import Command as Stock

    from platform_site.devservices import postgres_bin
    from tenants.models import Plan

    call_command(Stock(), shared=True, interactive=False, verbosity=0)
    Plan.objects.create(name="Bench", slug="bench")
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{TEMPLATE}"')
    call_command(Stock(), schema_name=TEMPLATE, executor="standard", interactive=False, verbosity=0)
    s = connection.settings_dict
    dump = subprocess.run(
        [postgres_bin("pg_dump"), "-h", s["HOST"] or "127.0.0.1", "-p", str(s["PORT"] or 5432),
         "-U", s["USER"] or "postgres", "-n", TEMPLATE, "--inserts", "--no-owner", s["NAME"]],
        check=True, capture_output=True, text=True, env=dict(os.environ, PGPASSWORD=s["PASSWORD"] or ""),
    ).stdout
    # Drop psql meta-commands (\restrict) and session settings; keep the DDL and rows.
    skip = ("\\", "--", "SET ", "SELECT pg_catalog.set_config")
    lines = [line for line in dump.splitlines() if not line.startswith(skip)]
    return "\n".join(lines)


def clone_schemas(dump: str, start: int, stop: int) -> float:
    """Restore the template under the names start..stop-1 and add their tenant rows."""
    from django.db import connection, transaction

    from tenants.models import Plan, Tenant

    started = time.perf_counter()
    pattern = re.compile(rf"\b{TEMPLATE}\b")
    plan = Plan.objects.get(slug="bench")
    for first in range(start, stop, 50):
        with transaction.atomic(), connection.cursor() as cursor:
            for i in range(first, min(first + 50, stop)):
                cursor.execute(pattern.sub(schema_name(i), dump))
    Tenant.objects.bulk_create(
        Tenant(subdomain=schema_name(i).replace("_", "-"), schema_name=schema_name(i), name=f"Bench {i}",
               plan=plan, owner_email=f"owner{i}@bench.test", status=Tenant.Status.ACTIVE)
        for i in range(start, stop)
    )
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ runs


def run_ours(workers: int) -> None:
    from django.core.management import call_command

    call_command("migrate_schemas", workers=workers, interactive=False, verbosity=0, stdout=io.StringIO())


def run_stock(executor: str) -> None:
    from django.core.management import call_command
    from django_tenants.management.commands.migrate_schemas import Command as Stock

    call_command(Stock(), executor=executor, interactive=False, verbosity=0, stdout=io.StringIO())


def timed(func, *args) -> float:
    from django.db import connections

    connections.close_all()  # every command starts from a cold connection, as from the shell
    started = time.perf_counter()
    func(*args)
    return time.perf_counter() - started


def all_current(count: int) -> bool:
    from tenants.migration_state import expected_migration_fingerprint
    from tenants.schema_migrations import schema_fingerprints

    found = schema_fingerprints([schema_name(i) for i in range(count)])
    return set(found.values()) == {expected_migration_fingerprint()}


def undo_migration() -> None:
    """Take the benchmark migration back out of every schema (plain SQL, not timed)."""
    from django.db import connection

    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DO $$ DECLARE s text; BEGIN
              FOR s IN SELECT schema_name FROM public.tenants_tenant LOOP
                EXECUTE format('ALTER TABLE %I.storefront_product DROP COLUMN IF EXISTS bench_note', s);
                EXECUTE format('DELETE FROM %I.django_migrations WHERE app = ''storefront'' AND name = %L',
                               s, 'MIGRATION');
              END LOOP;
              DELETE FROM public.django_migrations WHERE app = 'storefront' AND name = 'MIGRATION';
            END $$;
            """.replace("MIGRATION", MIGRATION)
        )


def measure(count: int, *, workers: int, stock: bool) -> dict[str, dict[str, float | None]]:
    from tests.tenants.extra_migrations import add_field_migration, extra_migrations

    results: dict[str, dict[str, float | None]] = {"no-op": {}, "migration": {}}
    timed(run_ours, workers)  # warm-up (also proves everything is current)
    noop = [timed(run_ours, workers) for _ in range(3)]
    results["no-op"]["ours"] = statistics.median(noop)
    results["no-op"]["stock std"] = timed(run_stock, "standard") if stock else None
    results["no-op"]["stock mp"] = timed(run_stock, "multiprocessing") if stock else None

    source = add_field_migration(field="bench_note")
    with extra_migrations("storefront", {MIGRATION: source}):
        variants = [("ours", run_ours, workers)]
        if stock:
            variants += [("stock std", run_stock, "standard"), ("stock mp", run_stock, "multiprocessing")]
        for label, func, arg in variants:
            results["migration"][label] = timed(func, arg)
            if not all_current(count):
                raise SystemExit(f"{label}: not every schema is up to date after the migration run")
            undo_migration()
    results["migration"].setdefault("stock std", None)
    results["migration"].setdefault("stock mp", None)
    return results


def cli_noop_seconds() -> float:
    env = dict(os.environ, DATABASE_URL=database_urls()[1])
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "migrate_schemas", "--noinput"], cwd=BASE_DIR, env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_note() -> str:
    import django
    import psycopg
    from django.db import connection

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return (f"{os.cpu_count()} cores ({cpu}), PostgreSQL {connection.pg_version // 10000}."
            f"{connection.pg_version % 10000}, Python {sys.version.split()[0]}, "
            f"Django {django.get_version()}, psycopg {psycopg.__version__}")


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def ratio(stock: float | None, ours: float) -> str:
    return "-" if stock is None else f"{stock / ours:.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--stock-max", type=int, default=1000, help="Largest size the stock command runs at.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="Keep the bench_migrate database.")
    args = parser.parse_args()

    admin_url, bench_url = database_urls()
    recreate_database(admin_url)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    load_before = load_note()
    try:
        dump = setup_public_and_template()
        machine = machine_note()
        rows = []
        made = 0
        for count in sorted(args.sizes):
            clone_time = clone_schemas(dump, made, count)
            made = count
            print(f"{count} schemas ready (cloned in {clone_time:.1f} s); measuring ({load_note()})...",
                  flush=True)
            results = measure(count, workers=args.workers, stock=count <= args.stock_max)
            print(f"  {count}: ours no-op {fmt(results['no-op']['ours'])}, migration "
                  f"{fmt(results['migration']['ours'])} ({load_note()})", flush=True)
            for scenario, r in results.items():
                rows.append((scenario, count, r))
        cli = cli_noop_seconds()
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_database(admin_url)

    print(f"\nMigrations across schemas - {machine}; {load_before} at start, {load_note()} at end\n")
    print(f"| scenario | schemas | ours ({args.workers} workers) | stock standard | stock multiprocessing "
          "| stock std / ours | stock mp / ours | ours per schema |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, count, r in rows:
        print(f"| {scenario} | {count} | {fmt(r['ours'])} | {fmt(r['stock std'])} | {fmt(r['stock mp'])} | "
              f"{ratio(r['stock std'], r['ours'])} | {ratio(r['stock mp'], r['ours'])} | "
              f"{r['ours'] / count * 1000:.2f} ms |")
    print(f"\nours as a command line, no-op over {made} schemas, incl. Python start-up and system checks: "
          f"{cli:.2f} s")


if __name__ == "__main__":
    main()
