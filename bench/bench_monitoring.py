#!/usr/bin/env python
"""Monitoring benchmarks: /metrics with 5,000 tenants, probing 1,000 local endpoints, rule
evaluation over 5,000 tenants. Each is compared, in the same run, with the obvious path it replaces.

    .venv/bin/python bench/bench_monitoring.py [--tenants 5000] [--endpoints 1000] [--rounds 15]

- /metrics: `monitoring.metrics.metrics_render()` and a full GET /metrics through the middleware,
  with tenants by status/plan, domains, per-host probe gauges (one row per host from
  monitoring_probestate), backup age per tenant and request metrics for 50 labelled tenants;
  also with METRICS_CACHE_SECONDS (a second scrape within the window). Compared, rounds
  interleaved, with: the stock prometheus_client path (a custom collector of GaugeMetricFamily
  fed by ORM queries, written by generate_latest), the previous revision (probe lines formatted
  in Python from ORM rows), and the probe gauges alone from the raw history (`DISTINCT ON (host)`
  over monitoring_proberesult, one hour of per-minute probes per host).
- Probing: `monitoring.probing.probe_run()` over N active tenants, HTTPS with a real TLS handshake
  to a local server in its own process (10 ms think time per request, like a near-by edge),
  PROBE_CONCURRENCY=32 against PROBE_CONCURRENCY=1 (the one-by-one loop).
- Rules: `monitoring.alerts.rules_evaluate()` with every rule enabled and every fact source
  wired (backups through the real selector, the default source, over 24 verified backups per
  tenant; drills and deployments synthetic), 5 % of hosts down, 2 % certificates expiring, 3 %
  stale backups: the first evaluation (opens incidents, queues deliveries), a steady one, and one
  after recovery (resolves). Baseline: the shop-down rule from the raw history (window query).

Everything runs in its own database (``bench_monitoring``) and a private Redis, removed at the end.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from core.facts import fact_sources_replaced  # noqa: E402
from platform_site import devservices  # noqa: E402

DB_NAME = "bench_monitoring"
FACTS: dict[str, list] = {"drills": [], "deployments": []}


def drills():
    return FACTS["drills"]


def deployments():
    return FACTS["deployments"]


SERVER = r"""
import http.server, ssl, sys, time
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.01)
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    def finish_request(self, request, client_address):
        # The TLS handshake in the connection's own thread, not in the accept loop.
        try:
            request = ctx.wrap_socket(request, server_side=True)
        except OSError:
            return
        super().finish_request(request, client_address)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
s = S(("127.0.0.1", port), H)
print("ready", flush=True)
s.serve_forever()
"""


def timed(func, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        func()
        out.append(time.perf_counter() - started)
    return out


def timed_interleaved(funcs: dict, rounds: int) -> dict[str, list[float]]:
    """Each function once per round, in turn, so load changes on a shared machine hit all alike."""
    out = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            started = time.perf_counter()
            func()
            out[name].append(time.perf_counter() - started)
    return out


def fmt(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{ms[0]:.1f} / {statistics.median(ms):.1f} / {ms[-1]:.1f}"


def prepare(run_dir: Path) -> tuple[devservices.LocalServer, str]:
    import psycopg

    base = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    admin_url = urlparse(base)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    redis = devservices.start_redis(run_dir / "redis")
    os.environ.update(
        {
            "DATABASE_URL": urlparse(base)._replace(path=f"/{DB_NAME}").geturl(),
            "REDIS_URL": redis.url,
            "DEBUG": "1",
            "DJANGO_SETTINGS_MODULE": "platform_site.settings",
            "LOG_LEVEL": "WARNING",
        }
    )
    return redis, admin_url


def make_tenants(count: int, start: int = 0) -> list:
    from tenants.models import Domain, Plan, Tenant

    plans = list(Plan.objects.all()) or [
        Plan.objects.create(name=n, slug=n.lower(), monthly_price=p)
        for n, p in (("Starter", 0), ("Growth", 49), ("Scale", 199))
    ]
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(
                subdomain=f"shop{i:05d}",
                schema_name=f"shop{i:05d}",
                name=f"Shop {i}",
                plan=plans[i % 3],
                owner_email=f"o{i}@bench.test",
                status=Tenant.Status.SUSPENDED if i % 50 == 49 else Tenant.Status.ACTIVE,
            )
            for i in range(start, start + count)
        ],
        batch_size=2000,
    )
    domains = [
        Domain(
            tenant=t, domain=f"{t.subdomain}.bench.test", kind="platform", status="active", is_primary=True
        )
        for t in tenants
    ]
    domains += [
        Domain(
            tenant=t, domain=f"www.{t.subdomain}.example", kind="custom", status="active", is_primary=False
        )
        for t in tenants[::5]
    ]
    Domain.objects.bulk_create(domains, batch_size=2000)
    return tenants


def bench_probes(endpoints: int, run_dir: Path, rows: list) -> None:
    from django.test import override_settings

    from monitoring.models import ProbeResult, ProbeState
    from monitoring.services.probing import probe_run
    from tenants.models import Domain
    from tests.monitoring.servers import LocalCA

    tenants = make_tenants(endpoints)
    Domain.objects.filter(kind="custom").update(status="disabled")  # exactly one host per tenant
    ca = LocalCA(run_dir)
    cert, key, _ = ca.issue("*.bench.test", days=60)
    port = devservices.free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        common = {
            "PROBE_SCHEME": "https",
            "PROBE_PORT": "",
            "PROBE_CONNECT_TO": {"*": f"127.0.0.1:{port}"},
            "OUTBOUND_ALLOWED_NETWORKS": ["127.0.0.1/32"],  # loopback is refused unless allowed
            "PROBE_CA_FILE": str(ca.ca_file),
            "PROBE_TIMEOUT_SECONDS": 10,
        }
        results = {}
        for label, concurrency in (("one by one (concurrency 1)", 1), ("ours (concurrency 32)", 32)):
            with override_settings(PROBE_CONCURRENCY=concurrency, **common):
                started = time.perf_counter()
                summary = probe_run()
                results[label] = time.perf_counter() - started
            active = sum(1 for t in tenants if t.status == "active")
            assert summary.total == active and summary.up == active, summary.down[:3]
        assert ProbeState.objects.count() == active and ProbeResult.objects.count() == 2 * active
        base = results["one by one (concurrency 1)"]
        for label, seconds in results.items():
            rows.append(
                (f"probe {active} HTTPS endpoints", label, f"{seconds:.2f} s", f"{base / seconds:.1f}x")
            )
    finally:
        server.terminate()
        server.wait(10)
    from django.db import connection

    with connection.cursor() as cursor:  # start the next benchmarks from a clean slate
        cursor.execute(
            "TRUNCATE monitoring_proberesult, monitoring_probestate, monitoring_probehourly, "
            "tenants_domain, tenants_tenant CASCADE"
        )


def seed_history(tenants: list, now: datetime) -> list:
    """One hour of per-minute probes per host (raw), and the state/hourly rows they lead to."""
    from monitoring.probes import ProbeOutcome
    from monitoring.selectors import ProbeTarget, probe_targets
    from monitoring.services.probing import probe_record

    targets = probe_targets()
    down = {t.host for t in targets[::20]}  # 5 % down for the last 4 minutes
    expiring = {t.host for t in targets[::50]}  # 2 % certificates within 14 days
    for minute in range(60, 0, -1):
        at = now - timedelta(minutes=minute)
        results = []
        for t in targets:
            ok = not (t.host in down and minute <= 4)
            expires = now + timedelta(days=5 if t.host in expiring else 70)
            results.append(
                (t, ProbeOutcome(t.url, ok, 200 if ok else 502, 40.0, "" if ok else "HTTP 502", expires))
            )
        probe_record(results=results, checked_at=at, complete=True)
    return [ProbeTarget(t.tenant_id, t.host, t.url) for t in targets]


def raw_probe_gauges() -> int:
    """The baseline: latest probe per host straight from the raw history."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (r.host) r.host, t.subdomain, r.ok, r.latency_ms, r.tls_expires_at "
            "FROM monitoring_proberesult r JOIN tenants_tenant t ON t.id = r.tenant_id "
            "WHERE r.checked_at >= now() - interval '1 day' ORDER BY r.host, r.checked_at DESC, r.id DESC"
        )
        return len(cursor.fetchall())


def raw_shop_down(needed: int) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT host, bool_and(NOT ok) FROM (SELECT host, ok, row_number() OVER (PARTITION BY host "
            "ORDER BY checked_at DESC, id DESC) AS n FROM monitoring_proberesult "
            "WHERE checked_at >= now() - interval '1 day') recent WHERE n <= %s GROUP BY host",
            [needed],
        )
        return sum(1 for _, all_down in cursor.fetchall() if all_down)


def tenant_domain_families() -> list:
    """Tenants by status/plan and domains by status/kind as GaugeMetricFamily, from ORM counts
    (the previous revision and the stock path built them the same way)."""
    from django.db.models import Count
    from prometheus_client.core import GaugeMetricFamily

    from tenants.models import Domain, Tenant

    tenants = GaugeMetricFamily("platform_tenants", "Tenants", labels=["status", "plan"])
    for row in Tenant.objects.values("status", "plan__slug").annotate(n=Count("pk")).order_by():
        tenants.add_metric([row["status"], row["plan__slug"]], row["n"])
    domains = GaugeMetricFamily("platform_domains", "Domains", labels=["status", "kind"])
    for row in Domain.objects.values("status", "kind").annotate(n=Count("pk")).order_by():
        domains.add_metric([row["status"], row["kind"]], row["n"])
    return [tenants, domains]


def previous_sources() -> dict:
    """The tenant and probe sources of the revision before the SQL-formatted probe lines."""
    from django.db import connection
    from django.utils import timezone

    from monitoring.metrics import RawFamily, label_value
    from monitoring.models import ProbeState

    def tenant_gauges():
        connection.set_schema_to_public()
        return tenant_domain_families()

    def probe_gauges():
        since = timezone.now() - timedelta(days=1)
        rows = ProbeState.objects.filter(checked_at__gte=since).values_list(
            "tenant__subdomain", "host", "ok", "latency_ms", "tls_expires_at"
        )
        now = timezone.now()
        up, latency, cert = [], [], []
        for subdomain, host, ok, latency_ms, expires in rows.iterator(chunk_size=5000):
            labels = f'{{tenant="{label_value(subdomain)}",host="{label_value(host)}"}}'
            up.append(f"platform_probe_up{labels} {1.0 if ok else 0.0}\n")
            if latency_ms is not None:
                latency.append(f"platform_probe_latency_seconds{labels} {latency_ms / 1000!r}\n")
            if expires is not None:
                days = round((expires - now).total_seconds() / 86400, 2)
                cert.append(f"platform_certificate_days_left{labels} {days!r}\n")
        return [RawFamily("platform_probe_up", "up", "gauge", up),
                RawFamily("platform_probe_latency_seconds", "latency", "gauge", latency),
                RawFamily("platform_certificate_days_left", "days", "gauge", cert)]

    return {"tenants": tenant_gauges, "probes": probe_gauges}


def stock_render() -> bytes:
    """What prometheus_client's documentation leads to: a custom collector yielding
    GaugeMetricFamily objects fed by ORM queries, written by generate_latest()."""
    from django.utils import timezone
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    from core.facts import fact_source
    from monitoring.collectors import rq_gauges
    from monitoring.models import ProbeState
    from tenants.models import Tenant

    class StockCollector:
        def collect(self):
            now = timezone.now()
            tenants, domains = tenant_domain_families()
            up = GaugeMetricFamily("platform_probe_up", "up", labels=["tenant", "host"])
            latency = GaugeMetricFamily(
                "platform_probe_latency_seconds", "latency", labels=["tenant", "host"]
            )
            cert = GaugeMetricFamily("platform_certificate_days_left", "days", labels=["tenant", "host"])
            for state in ProbeState.objects.filter(checked_at__gte=now - timedelta(days=1)).select_related(
                "tenant"
            ):
                labels = [state.tenant.subdomain, state.host]
                up.add_metric(labels, 1 if state.ok else 0)
                if state.latency_ms is not None:
                    latency.add_metric(labels, state.latency_ms / 1000)
                if state.tls_expires_at is not None:
                    cert.add_metric(labels, round((state.tls_expires_at - now).total_seconds() / 86400, 2))
            subdomains = {str(pk): sub for pk, sub in Tenant.objects.values_list("id", "subdomain")}
            age = GaugeMetricFamily("platform_backup_age_seconds", "age", labels=["tenant"])
            for fact in fact_source("backups")():
                if fact.last_success_at is not None:
                    age.add_metric([subdomains.get(str(fact.tenant_id), str(fact.tenant_id))],
                                   round((now - fact.last_success_at).total_seconds()))
            yield from [tenants, domains, up, latency, cert, age, *rq_gauges()]

    registry = CollectorRegistry()
    registry.register(StockCollector())
    return generate_latest(REGISTRY) + generate_latest(registry)


def bench_metrics(tenant_count: int, rounds: int, rows: list) -> None:
    from django.core.cache import cache
    from django.test import Client, override_settings
    from prometheus_client.parser import text_string_to_metric_families

    from monitoring import metrics
    from monitoring.metrics import metrics_render, request_observe, tenant_labels

    tenants = make_tenants(tenant_count)
    seed_history(tenants, datetime.now(UTC))
    for i in range(20_000):
        request_observe(
            tenant=tenant_labels.label(tenants[i % min(400, len(tenants))].subdomain),
            status=200,
            seconds=0.01 * (i % 7),
        )
    # Backup age per tenant, drills and deployments are in every /metrics render measured here.
    wired = ExitStack()
    wired.enter_context(fact_sources_replaced(wire_facts()))
    text = metrics_render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hosts = len(families["platform_probe_up"].samples)
    series = sum(len(f.samples) for f in families.values())

    ours_sources = dict(metrics._sources)
    previous = {**ours_sources, **previous_sources()}

    def previous_render():
        metrics._sources.clear()
        metrics._sources.update(previous)
        try:
            return metrics_render()
        finally:
            metrics._sources.clear()
            metrics._sources.update(ours_sources)

    def same_samples(render) -> set:
        return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(
            render().decode()) for s in f.samples if s.name.startswith(("platform_probe", "platform_cert"))}

    # All three paths expose the same per-host samples.
    assert same_samples(metrics_render) == same_samples(previous_render) == same_samples(stock_render)

    def cached_render():
        with override_settings(METRICS_CACHE_SECONDS=60):
            return metrics_render()

    client = Client(HTTP_HOST="metrics.internal")
    cached_render()  # fills the window
    times = timed_interleaved(
        {
            "ours": metrics_render,
            "http": lambda: client.get("/metrics"),
            "cached": cached_render,
            "previous": previous_render,
            "stock": stock_render,
            "raw": raw_probe_gauges,
        },
        rounds,
    )
    cache.delete(metrics.PLATFORM_CACHE_KEY)
    wired.close()
    ours = statistics.median(times["ours"])

    def vs(name: str) -> str:
        return f"{statistics.median(times[name]) / ours:.1f}x ours"

    rows.append(
        (
            f"/metrics, {tenant_count} tenants ({hosts} hosts, {series} series, {len(text) // 1024} KiB)",
            "ours: metrics_render()",
            fmt(times["ours"]) + " ms",
            "target < 200 ms",
        )
    )
    rows.append(("", "ours: GET /metrics (middleware + view)", fmt(times["http"]) + " ms", vs("http")))
    rows.append(("", "ours, METRICS_CACHE_SECONDS set, within the window", fmt(times["cached"]) + " ms",
                 vs("cached")))
    rows.append(("", "previous revision: probe lines formatted in Python from ORM rows",
                 fmt(times["previous"]) + " ms", vs("previous")))
    rows.append(("", "stock prometheus_client: GaugeMetricFamily collector + generate_latest",
                 fmt(times["stock"]) + " ms", vs("stock")))
    rows.append(("", "baseline: probe gauges alone from raw history", fmt(times["raw"]) + " ms", vs("raw")))


def wire_facts() -> dict:
    """Fact sources for every active tenant, for `core.facts.fact_sources_replaced`.

    Backups go through the real selector (``backups.selectors.backup_facts``, the default source)
    over a day of hourly verified backups per active tenant, 3 % of them stale; drills and
    deployments, a handful of rows either way, are synthetic.
    """
    # The rule engine imports this file by name (not as __main__): fill that module's FACTS.
    from importlib import import_module

    from backups.models import Backup
    from core.facts import DeploymentFact, DrillFact
    from tenants.models import Tenant

    facts = import_module("bench.bench_monitoring").FACTS
    now = datetime.now(UTC)
    if not Backup.objects.exists():
        tenants = list(Tenant.objects.filter(status="active").values_list("pk", "subdomain"))
        rows = [
            Backup(
                kind=Backup.Kind.TENANT,
                purpose=Backup.Purpose.SCHEDULED,
                tenant_id=pk,
                tenant_label=sub,
                schema_name=sub,
                status=Backup.Status.VERIFIED,
                size_bytes=40_000 + hour,
                created_at=now - timedelta(hours=hour + (3 if i % 33 == 0 else 0.5)),
                finished_at=now - timedelta(hours=hour + (3 if i % 33 == 0 else 0.5)),
            )
            for i, (pk, sub) in enumerate(tenants)
            for hour in range(24)
        ]
        Backup.objects.bulk_create(rows, batch_size=5000)
    facts["drills"] = [DrillFact(f"drill-{i}", now - timedelta(hours=5), i % 10 != 0) for i in range(50)]
    facts["deployments"] = [
        DeploymentFact(str(i), env, "succeeded" if i else "rolled_back", now - timedelta(hours=2))
        for i, env in enumerate(("production", "staging", "eu", "us"))
    ]
    from backups.selectors import backup_facts

    module = import_module("bench.bench_monitoring")
    return {"backups": backup_facts, "drills": module.drills, "deployments": module.deployments,
            "certificates": None}


def bench_rules(rounds: int, rows: list) -> None:
    from django.db import connection

    from core.audit import Actor
    from monitoring.models import Channel, Delivery, Incident, ProbeState
    from monitoring.services import alerts, channels
    from tenants.models import Tenant

    active = Tenant.objects.filter(status="active").count()
    channels.channel_create(
        name="hook",
        kind="webhook",
        target="http://127.0.0.1:9/hook",
        secret="bench-secret-0123456789",
        actor=Actor.system("bench"),
    )
    with fact_sources_replaced(wire_facts()):
        started = time.perf_counter()
        first = alerts.rules_evaluate()
        first_s = time.perf_counter() - started
        steady = timed(alerts.rules_evaluate, rounds)
        ProbeState.objects.filter(failures__gt=0).update(ok=True, failures=0)
        started = time.perf_counter()
        recovered = alerts.rules_evaluate()
        recover_s = time.perf_counter() - started
    raw = timed(lambda: raw_shop_down(3), rounds)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM monitoring_proberesult")
        raw_rows = cursor.fetchone()[0]
    label = f"rules over {active} active tenants"
    rows.append(
        (
            label,
            f"first evaluation: opens {first.opened} incidents, queues "
            f"{Delivery.objects.filter(event='trigger').count()} deliveries",
            f"{first_s * 1000:.0f} ms",
            "target < 2 s",
        )
    )
    rows.append(("", "steady evaluation (all 8 rules, nothing changes)", fmt(steady) + " ms", ""))
    rows.append(("", f"after recovery: resolves {recovered.resolved}", f"{recover_s * 1000:.0f} ms", ""))
    rows.append(
        (
            "",
            f"baseline: shop-down alone from raw history ({raw_rows} rows)",
            fmt(raw) + " ms",
            f"{statistics.median(raw) / statistics.median(steady):.1f}x slower than all 8 rules",
        )
    )
    assert Incident.objects.filter(status="open").count() == first.opened - recovered.resolved
    assert Channel.objects.count() == 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=5000)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--parts", default="probes,metrics,rules", help="which benchmarks to run")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    redis, admin_url = prepare(run_dir)
    rows: list[tuple[str, str, str, str]] = []
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

        call_command(StockMigrateSchemas(), shared=True, interactive=False, verbosity=0)
        parts = set(args.parts.split(","))
        if "probes" in parts:
            bench_probes(args.endpoints, run_dir, rows)
        if parts & {"metrics", "rules"}:
            bench_metrics(args.tenants, args.rounds, rows)  # also seeds what the rules read
        if "rules" in parts:
            bench_rules(args.rounds, rows)
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(redis.stop_cmd, capture_output=True)
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load}; times min / median / max over {args.rounds} rounds\n"
    )
    print("| benchmark | path | time | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
