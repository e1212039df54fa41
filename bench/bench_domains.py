#!/usr/bin/env python
"""Custom-domain benchmarks: the nginx edge at 1,000 and 5,000 domains, and verification throughput.

    .venv/bin/python bench/bench_domains.py [--sizes 1000,5000] [--pending 1000] [--rounds 3]

Edge: for each EDGE_TLS_MODE (per_domain: a server block and certificates loaded per domain, the
conventional static nginx setup; shared: one block, certificates by SNI at the handshake) and size, a
database holding that many active custom domains with certificates (one
throwaway key pair reused, encrypted at rest like real ones) and a real nginx started from the
edge folder. Timed, per round, one domain added then tenants.domains.edge.edge_render: the DB query,
render, `nginx -t`, atomic swap and `nginx -s reload` until the new workers serve (old workers
gone). Baselines in the same run: per_domain at the same size, and no custom domains at all.
The first render (writing every certificate file from the database) is reported apart. nginx
memory is the RSS of master + workers after the reload.

Verification: N pending domains, each with its TXT and A records in pebble-challtestsrv, checked
by tenants.domains.domains_verify with CUSTOM_DOMAIN_CHECK_CONCURRENCY workers, against the same
check run one domain at a time (concurrency 1) on a fresh copy of the rows.

Everything runs on private loopback ports under a temp folder with its own database
(``bench_domains``) and Redis, all removed at the end.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from platform_site import devservices  # noqa: E402

DB_NAME = "bench_domains"


def _prepare_env(run_dir: Path) -> tuple[devservices.LocalServer, str]:
    import psycopg

    base = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    admin_url = urlparse(base)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    redis = devservices.start_redis(run_dir / "redis")
    os.environ.update({
        "DATABASE_URL": urlparse(base)._replace(path=f"/{DB_NAME}").geturl(),
        "REDIS_URL": redis.url, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "platform_site.settings",
        "LOG_LEVEL": "WARNING",
    })
    return redis, admin_url


def _drop_db(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def _setup_django():
    import django

    django.setup()
    from django.core.management import call_command
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

    call_command(StockMigrateSchemas(), shared=True, interactive=False, verbosity=0)


def _tenant():
    from tenants.models import Plan, Tenant

    plan = Plan.objects.create(name="Bench", slug="bench", max_custom_domains=100_000)
    return Tenant.objects.create(subdomain="bench", schema_name="bench", name="Bench", plan=plan,
                                 owner_email="o@bench.test", status=Tenant.Status.ACTIVE)


def _add_active(tenant, start: int, count: int, chain_enc: str, key_enc: str) -> None:
    from tenants.models import Certificate, Domain

    domains = Domain.objects.bulk_create([
        Domain(tenant=tenant, domain=f"shop{i}.bench-edge.example", kind=Domain.Kind.CUSTOM,
               status=Domain.Status.ACTIVE, is_primary=False)
        for i in range(start, start + count)
    ])
    Certificate.objects.bulk_create([
        Certificate(domain=d, status=Certificate.Status.ISSUED, chain_encrypted=chain_enc,
                    key_encrypted=key_enc)
        for d in domains
    ])


def _workers(master: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _rss_kb(master: int) -> int:
    out = subprocess.run(["ps", "-o", "rss=", "--pid", str(master), "--ppid", str(master)],
                         capture_output=True, text=True)
    return sum(int(x) for x in out.stdout.split())


def _cycle(actor, master: int) -> tuple[float, float]:
    """edge_render with one change, then wait for the old workers to go: (render+test+swap, total)."""
    from tenants.domains.edge import edge_render

    before = _workers(master)
    start = time.perf_counter()
    result = edge_render(actor=actor)
    rendered = time.perf_counter() - start
    assert result.reloaded, result
    deadline = time.monotonic() + 60
    while _workers(master) & before or not _workers(master):
        if time.monotonic() > deadline:
            raise RuntimeError("nginx did not replace its workers within 60 s")
        time.sleep(0.005)
    return rendered, time.perf_counter() - start


def bench_edge(sizes: list[int], rounds: int, run_dir: Path) -> list[dict]:
    from django.conf import settings

    from core.audit import Actor
    from core.crypto import secret_encrypt
    from tenants.domains.edge import edge_render
    from tenants.models import Domain
    from tests.domains.components import Nginx, make_tls_files

    actor = Actor.command("bench_domains")
    _ca, cert, key = make_tls_files(run_dir / "tls", ["bench-edge.example"])
    chain_enc, key_enc = secret_encrypt(cert.read_bytes()), secret_encrypt(key.read_bytes())
    tenant = _tenant()
    rows = []
    for mode, size in [(m, n) for m in ("per_domain", "shared") for n in (0, *sizes)]:
        settings.EDGE_TLS_MODE = mode
        edge_dir = run_dir / f"edge-{mode}-{size}"
        edge_dir.mkdir()
        os.chmod(edge_dir, 0o755)
        settings.EDGE_DIR = edge_dir
        settings.EDGE_HTTP_PORT, settings.EDGE_HTTPS_PORT = devservices.free_port(), devservices.free_port()
        Domain.objects.filter(kind=Domain.Kind.CUSTOM).delete()
        _add_active(tenant, 0, size, chain_enc, key_enc)
        start = time.perf_counter()
        edge_render(actor=actor, reload=False)
        first = time.perf_counter() - start
        nginx = Nginx(edge_dir)
        nginx.start()
        master = nginx.process.proc.pid
        devservices.wait_for(lambda m=master: _workers(m), "nginx workers")
        renders, totals = [], []
        for r in range(rounds):
            _add_active(tenant, size + r, 1, chain_enc, key_enc)  # one new domain per round
            rendered, total = _cycle(actor, master)
            renders.append(rendered)
            totals.append(total)
        rss = _rss_kb(master)
        nginx.stop()
        rows.append({
            "mode": mode, "domains": size, "first_render_s": first,
            "render_test_swap_s": statistics.median(renders),
            "cycle_s": statistics.median(totals), "cycle_max_s": max(totals), "nginx_rss_mb": rss / 1024,
            "config_kb": (edge_dir / "nginx.conf").stat().st_size / 1024,
        })
        print(f"edge {mode} {size}: {rows[-1]}", file=sys.stderr)
    return rows


def bench_verify(count: int, run_dir: Path) -> list[dict]:
    from django.conf import settings

    from core.audit import Actor
    from tenants.domains import services as domains
    from tenants.models import Domain
    from tests.domains.components import ChallTestSrv

    dns = ChallTestSrv(run_dir)
    try:
        settings.PLATFORM_BASE_DOMAIN = "platform.test"
        settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = [dns.nameserver]
        settings.CUSTOM_DOMAIN_EDGE_IPV4 = ["127.0.0.1"]
        settings.EDGE_DIR = run_dir / "edge-verify"
        tenant = _tenant() if not Domain.objects.exists() else Domain.objects.first().tenant
        tenant.plan.max_custom_domains = 100_000
        tenant.plan.save()
        actor = Actor.command("bench_domains")
        rows = []
        pool_size = settings.CUSTOM_DOMAIN_CHECK_CONCURRENCY
        for label, concurrency in (("one at a time", 1), ("bounded pool", pool_size)):
            Domain.objects.filter(kind=Domain.Kind.CUSTOM).delete()
            pending = [domains.domain_add(tenant=tenant, domain=f"v{i}.bench-verify.example", actor=actor)
                       for i in range(count)]
            for d in pending:
                dns.set_txt(f"_platform-verify.{d.domain}", d.verification_token)
                dns.add_a(d.domain, "127.0.0.1")
            settings.CUSTOM_DOMAIN_CHECK_CONCURRENCY = concurrency
            start = time.perf_counter()
            results = domains.domains_verify(domains=pending, actor=actor)
            elapsed = time.perf_counter() - start
            verified = Domain.objects.filter(status=Domain.Status.CERTIFICATE_PENDING).count()
            assert verified == count, f"only {verified} of {count} verified: {results[0].message}"
            rows.append({"mode": label, "concurrency": concurrency, "domains": count, "seconds": elapsed,
                         "per_second": count / elapsed})
            print(f"verify {label}: {rows[-1]}", file=sys.stderr)
        return rows
    finally:
        dns.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-domains-"))
    os.chmod(run_dir, 0o755)
    redis, admin_url = _prepare_env(run_dir)
    try:
        _setup_django()
        edge_rows = bench_edge([int(s) for s in args.sizes.split(",")], args.rounds, run_dir)
        verify_rows = bench_verify(args.pending, run_dir)
    finally:
        from django.db import connections

        connections.close_all()
        redis.stop()
        _drop_db(admin_url)
    print(f"\nMachine: {os.cpu_count()} cores, {platform.platform()}, load {os.getloadavg()[0]:.2f}; "
          f"{subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}")
    static = {r["domains"]: r for r in edge_rows if r["mode"] == "per_domain"}
    print("\n| EDGE_TLS_MODE | active domains | first render (writes cert files) | render + nginx -t "
          "+ swap | full cycle incl. reload (median) | max | vs per_domain | nginx RSS | nginx.conf |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in edge_rows:
        ratio = r["cycle_s"] / static[r["domains"]]["cycle_s"]
        print(f"| {r['mode']} | {r['domains']:,} | {r['first_render_s']:.2f} s | "
              f"{r['render_test_swap_s']:.2f} s | {r['cycle_s']:.2f} s | {r['cycle_max_s']:.2f} s | "
              f"{ratio:.2f}x | {r['nginx_rss_mb']:.0f} MB | {r['config_kb']:.0f} KB |")
    seq = verify_rows[0]["seconds"]
    print("\n| verification | concurrency | domains | time | domains/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in verify_rows:
        print(f"| {r['mode']} | {r['concurrency']} | {r['domains']:,} | {r['seconds']:.2f} s | "
              f"{r['per_second']:.0f} | {seq / r['seconds']:.1f}x |")


if __name__ == "__main__":
    main()
