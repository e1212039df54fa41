#!/usr/bin/env python
"""Webhook benchmarks: what the audit hook adds to a state change, and delivery throughput.

    .venv/bin/python bench/bench_webhooks.py [--rounds 200] [--messages 500]

- Hook: one suspend + resume of a shop (two audited changes, each a webhook event), rounds
  interleaved in blocks of 10 between three paths: the webhooks receiver disconnected from
  `core.audit.audit_recorded` (the path before webhooks), connected with no endpoint (one query
  after commit), and connected with 3 endpoints (2 of them hear the shop: a message and 2
  deliveries per event, one send job per block; the queue is emptied after each block).
- Delivery: N messages to one endpoint on a local receiver (threads, answers 204), sent three
  ways: bare `core.outbound.fetch` POSTs in a loop (the floor: no signing, no database),
  `webhooks.services.delivery_attempt` in a loop (claim, sign, POST, record the attempt), and the
  real RQ worker (`rqworker default --burst`, its start-up included; the events' send jobs
  coalesce into a few, each sending what is due).

Everything runs in its own database (``bench_webhooks``) and a private Redis, removed at the end.
"""

import argparse
import http.server
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from platform_site import devservices  # noqa: E402

DB_NAME = "bench_webhooks"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def fmt(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{ms[0]:.2f} / {statistics.median(ms):.2f} / {ms[-1]:.2f} ms"


def prepare(run_dir: Path):
    import psycopg

    base = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    admin_url = urlparse(base)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    redis = devservices.start_redis(run_dir / "redis")
    os.environ.update({
        "DATABASE_URL": urlparse(base)._replace(path=f"/{DB_NAME}").geturl(),
        "REDIS_URL": redis.url,
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "platform_site.settings",
        "LOG_LEVEL": "WARNING",
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
        "TENANT_SCHEMA_POOL_SIZE": "0",
    })
    return redis, admin_url


def bench_hook(rounds: int, rows: list) -> None:
    import django_rq

    from core.audit import Actor, audit_recorded
    from tenants.models import Plan
    from tenants.services import tenant_provision, tenant_resume, tenant_suspend
    from webhooks import services
    from webhooks.receivers import audit_event_recorded

    actor = Actor.command("bench")
    plan = Plan.objects.create(name="Growth", slug="growth")
    shop = tenant_provision(subdomain="bench-shop", name="Bench", plan=plan, owner_email="o@bench.test",
                            actor=actor).tenant
    other = tenant_provision(subdomain="bench-other", name="Other", plan=plan, owner_email="o@bench.test",
                             actor=actor).tenant
    queue = django_rq.get_queue("default")
    times: dict[str, list[float]] = {"no webhooks (receiver off)": [], "hook, no endpoint": [],
                                     "hook, 3 endpoints": []}

    def cycle() -> float:
        started = time.perf_counter()
        tenant_suspend(tenant=shop, reason="bench", actor=actor)
        tenant_resume(tenant=shop, actor=actor)
        return time.perf_counter() - started

    endpoints: list = []
    for _block in range(max(1, rounds // 10)):
        for path in times:
            connected = path != "no webhooks (receiver off)"
            if connected:
                audit_recorded.connect(audit_event_recorded, dispatch_uid="webhooks.audit_event_recorded")
            else:
                audit_recorded.disconnect(dispatch_uid="webhooks.audit_event_recorded")
            if path == "hook, 3 endpoints" and not endpoints:
                endpoints = [services.endpoint_create(url=f"https://hooks{n}.bench.test/in", tenant=t,
                                                      actor=actor).endpoint
                             for n, t in enumerate([None, shop, other])]
            for endpoint in endpoints:
                endpoint.enabled = path == "hook, 3 endpoints"
                endpoint.save(update_fields=["enabled"])
            for _ in range(10):
                times[path].append(cycle())
            queue.empty()
            queue.connection.delete(services.SEND_QUEUED)
    audit_recorded.connect(audit_event_recorded, dispatch_uid="webhooks.audit_event_recorded")
    base = statistics.median(times["no webhooks (receiver off)"])
    for path, values in times.items():
        rows.append(("suspend + resume", path, fmt(values), f"x{statistics.median(values) / base:.2f}"))


def bench_delivery(messages: int, rows: list) -> None:
    import django_rq

    from core import outbound
    from core.audit import Actor
    from tenants.models import Tenant
    from webhooks import services
    from webhooks.models import Delivery, Endpoint

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/in"
    actor = Actor.command("bench")
    Endpoint.objects.all().delete()
    services.endpoint_create(url=url, actor=actor)
    shop = Tenant.objects.get(subdomain="bench-shop")
    queue = django_rq.get_queue("default")
    try:
        body = b'{"type":"tenant.suspended","data":{}}'
        started = time.perf_counter()
        for _ in range(messages):
            outbound.fetch(url, method="POST", body=body, max_redirects=0,
                           headers={"Content-Type": "application/json"})
        floor = time.perf_counter() - started
        rows.append(("delivery", "bare outbound.fetch POST (floor)", f"{messages / floor:.0f} /s", ""))

        def emit() -> list[int]:
            for _ in range(messages):
                services.message_emit(event_type="tenant.suspended", tenant=shop, data={"n": 1})
            return list(Delivery.objects.filter(status="pending").values_list("pk", flat=True))

        ids = emit()
        queue.empty()
        started = time.perf_counter()
        for pk in ids:
            services.delivery_attempt(delivery_id=pk)
        inline = time.perf_counter() - started
        assert Delivery.objects.filter(status="succeeded").count() == messages
        rows.append(("delivery", "delivery_attempt in a loop", f"{messages / inline:.0f} /s",
                     f"x{floor / inline:.2f} of the floor"))

        queue.empty()
        queue.connection.delete(services.SEND_QUEUED)
        ids = emit()
        assert ids and queue.count == 1, "the burst should queue one send job"
        env = {**os.environ}
        started = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", "rqworker", "default", "--burst"], cwd=BASE_DIR, env=env,
                       check=True, capture_output=True)
        worker = time.perf_counter() - started
        assert Delivery.objects.filter(status="succeeded").count() == 2 * messages, "the worker failed some"
        rows.append(("delivery", "real RQ worker, 1 process (start-up included)",
                     f"{messages / worker:.0f} /s", f"x{floor / worker:.2f} of the floor"))
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    redis, admin_url = prepare(run_dir)
    rows: list[tuple[str, str, str, str]] = []
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

        call_command(StockMigrateSchemas(), shared=True, interactive=False, verbosity=0)
        bench_hook(args.rounds, rows)
        bench_delivery(args.messages, rows)
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(redis.stop_cmd, capture_output=True)
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load}; {args.rounds} rounds, {args.messages} messages\n")
    print("| benchmark | path | time (min / median / max) or rate | vs baseline |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
