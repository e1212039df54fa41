#!/usr/bin/env python
"""API benchmark: "get tenant" and "create tenant" through the API against the admin path, and a
burst of shops created through the API, in the same run.

    .venv/bin/python bench/bench_api.py [--requests 300] [--concurrency 4] [--shops 1000]

One database (bench_api_<pid> on DATABASE_URL's server), a private Redis, gunicorn (--web-workers
sync workers, 3 by default as WEB_CONCURRENCY in compose/docker-compose.prod.yml) and the RQ worker
(it refills the spare-schema pool, as in production), with the pool filled to its default size
(TENANT_SCHEMA_POOL_SIZE, 5) before each timed phase.

  get tenant     GET /api/v1/tenants/<sub> with a staff key, against the tenant's admin detail
                 page GET /admin/tenants/tenant/<id>/change/ with a superuser's session
  create tenant  POST /api/v1/tenants (the shop is live when it answers 201), POST /api/v1/tenants
                 with Prefer: respond-async (202, the worker builds it), against the admin's add
                 form POST (records the shop, the worker builds it; what staff get today)
  burst          --shops shops through POST /api/v1/tenants (201 each) by --concurrency clients,
                 starting from the default pool: wall time, errors, how many came from the pool

Requests/s is with --concurrency client threads; p50/p99 are per request. Everything started here
is stopped and the database dropped at the end.
"""

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from bench.bench_provision import load_note, machine_note, recreate_databases  # noqa: E402

DB_NAME = f"bench_api_{os.getpid()}"  # two runs at once (the smoke test, a full run) never collide
ADMIN_HOST = "admin.bench.test"
PASSWORD = "bench-only-passphrase-42"
SETUP = """
from api.models import SCOPES
from api.services import apikey_create
from core.audit import Actor
from django.contrib.auth import get_user_model
from tenants.models import Plan
Plan.objects.create(name="Growth", slug="growth", max_products=1000, max_custom_domains=3)
from django.conf import settings
from django.test import Client
client = Client()
client.force_login(get_user_model().objects.create_superuser("bench", "bench@bench.test", "{password}"))
print("SESSION", client.cookies[settings.SESSION_COOKIE_NAME].value)
print("KEY", apikey_create(name="bench", scopes=list(SCOPES), actor=Actor.command("bench_api")).token)
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


class Stack:
    def __init__(self, run_dir: Path, env: dict[str, str]):
        self.run_dir, self.env, self.procs = run_dir, env, []

    def manage(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, input=stdin,
                                capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def start(self, port: int, web_workers: int) -> None:
        from platform_site import devservices

        log = open(self.run_dir / "servers.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "platform_site.wsgi", "-w", str(web_workers),
             "-b", f"127.0.0.1:{port}",
             "--log-level", "warning"], cwd=BASE_DIR, env=self.env, stdout=log, stderr=log))
        self.procs.append(subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "default", "long"], cwd=BASE_DIR, env=self.env,
            stdout=log, stderr=log))
        import socket

        devservices.wait_for(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True,
                             "gunicorn", timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def timed(count: int, concurrency: int, one, *, seconds: float | None = None) -> dict:
    """Run ``one(session, i)`` count times on `concurrency` threads (each returns an error or None);
    with ``seconds``, stop starting new ones after that long (n is then what was done)."""
    import requests

    local = threading.local()
    times: list[float] = []
    errors: list[str] = []

    def run(i: int) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            return
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        problem = one(session, i)
        times.append(time.perf_counter() - started)
        if problem:
            errors.append(problem)

    started = time.perf_counter()
    deadline = started + seconds if seconds else None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(run, range(count)))
    wall = time.perf_counter() - started
    done = len(times)
    return {"n": done, "asked": count, "wall": wall, "rps": done / wall, "p50": percentile(times, 50),
            "p99": percentile(times, 99), "errors": errors}


def admin_session(base: str, session_id: str):
    """A superuser's browser session (made with Django's test client in the setup)."""
    import requests

    session = requests.Session()
    session.headers["Host"] = ADMIN_HOST
    session.cookies.set("sessionid", session_id)
    answer = session.get(f"{base}/admin/", allow_redirects=False)
    if answer.status_code != 200:
        raise RuntimeError(f"the admin session does not work: {answer.status_code} "
                           f"{answer.headers.get('Location')} {answer.text[:300]}")
    return session


def run(args, stack: Stack, base: str, key: str, session_id: str) -> dict:
    import requests

    auth = {"Authorization": f"Bearer {key}", "Host": ADMIN_HOST}
    results: dict = {}

    def shop(prefix: str, i: int) -> dict:
        return {"subdomain": f"{prefix}{i}", "name": f"Bench {prefix}{i}", "plan": "growth",
                "owner_email": f"owner@{prefix}{i}.bench.test"}

    def fill_pool() -> None:
        stack.manage("fill_schema_pool")  # to TENANT_SCHEMA_POOL_SIZE, the default 5

    first = requests.post(f"{base}/api/v1/tenants", json=shop("seed", 0), headers=auth)
    if first.status_code != 201:
        raise RuntimeError(f"create failed: {first.status_code} {first.text[:500]}")
    tenant_id = first.json()["tenant"]["id"]
    admin = admin_session(base, session_id)

    def api_get(session, i):
        r = session.get(f"{base}/api/v1/tenants/seed0", headers=auth)
        return None if r.status_code == 200 else f"{r.status_code}"

    def admin_get(session, i):
        r = admin.get(f"{base}/admin/tenants/tenant/{tenant_id}/change/")
        return None if r.status_code == 200 and "seed0" in r.text else f"{r.status_code}"

    results["get tenant, API"] = timed(args.requests, args.concurrency, api_get)
    results["get tenant, admin page"] = timed(args.requests, args.concurrency, admin_get)

    n = max(1, args.requests // 10)
    fill_pool()

    def api_create(session, i):
        r = session.post(f"{base}/api/v1/tenants", json=shop("apis", i), headers=auth)
        return None if r.status_code == 201 else f"{r.status_code} {r.text[:200]}"

    results["create tenant, API (live at 201)"] = timed(n, args.concurrency, api_create)
    fill_pool()

    def api_create_async(session, i):
        r = session.post(f"{base}/api/v1/tenants", json=shop("apia", i),
                         headers={**auth, "Prefer": "respond-async"})
        return None if r.status_code == 202 else f"{r.status_code} {r.text[:200]}"

    results["create tenant, API async (202)"] = timed(n, args.concurrency, api_create_async)
    fill_pool()
    form = admin.get(f"{base}/admin/tenants/tenant/add/").text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    plan_id = re.search(r'<option value="(\d+)"[^>]*>Growth', form).group(1)

    def admin_create(session, i):
        data = {**shop("adm", i), "plan": plan_id, "csrfmiddlewaretoken": csrf}
        r = admin.post(f"{base}/admin/tenants/tenant/add/", data=data, allow_redirects=False)
        return None if r.status_code == 302 else f"{r.status_code}"

    results["create tenant, admin add form (queued)"] = timed(n, args.concurrency, admin_create)
    stack.manage("shell", "-c", "import time\n"
                 "from tenants.models import Tenant\n"
                 "for _ in range(600):\n"
                 "    if not Tenant.objects.filter(status='provisioning').exists(): break\n"
                 "    time.sleep(0.5)")
    fill_pool()
    if args.shops:
        results["burst"] = timed(args.shops, args.concurrency, lambda s, i: api_create(s, 100000 + i),
                                 seconds=args.burst_seconds)
    return results


def print_table(machine: str, results: dict, args) -> None:
    print(f"\nAPI against the admin path, {args.concurrency} client threads, "
          f"{args.web_workers} gunicorn workers - {machine}\n")
    header = f"{'what':<42} {'n':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        if name == "burst":
            continue
        print(f"{name:<42} {r['n']:>5} {r['rps']:8.1f} {r['p50'] * 1000:8.1f} {r['p99'] * 1000:8.1f}"
              f" {len(r['errors']):>6}")
    get_api, get_admin = results["get tenant, API"], results["get tenant, admin page"]
    print(f"\nget tenant: API {get_api['rps'] / get_admin['rps']:.1f}x the admin page's req/s")
    burst = results.get("burst")
    if burst:
        verdict = "met" if burst["wall"] < 60 and not burst["errors"] else "NOT met"
        if burst["n"] < burst["asked"]:
            print(f"Stopped after --burst-seconds {args.burst_seconds:.0f}: {burst['n']} of "
                  f"{burst['asked']} made; at this rate {burst['asked']} take "
                  f"{burst['asked'] / burst['rps']:.0f} s")
            verdict = "NOT met"
        if burst["asked"] < 1000:
            verdict = f"not measured (only {burst['asked']} shops asked; run with --shops 1000)"
        print(f"\nBurst: {burst['n']} shops through POST /api/v1/tenants in {burst['wall']:.1f} s "
              f"({burst['rps']:.1f}/s, p50 {burst['p50'] * 1000:.0f} ms, p99 {burst['p99'] * 1000:.0f} ms), "
              f"{len(burst['errors'])} errors, starting from the default pool of 5")
        print(f"Target 1,000 shops in under 60 s with 0 errors: {verdict}")
        if burst["errors"]:
            print("first errors:", burst["errors"][:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per 'get' row (creates: a tenth)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=3,
                        help="gunicorn sync workers (3: WEB_CONCURRENCY of compose/docker-compose.prod.yml)")
    parser.add_argument("--shops", type=int, default=1000, help="shops in the burst (0: skip)")
    parser.add_argument("--burst-seconds", type=float, default=600,
                        help="stop the burst after this long and report the rate (the target is 60 s)")
    args = parser.parse_args()
    if not 10 <= args.requests <= 10000 or not 1 <= args.concurrency <= 32 or not 0 <= args.shops <= 5000:
        parser.error("--requests 10..10000, --concurrency 1..32, --shops 0..5000")

    from platform_site import devservices

    server_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    if not devservices.postgres_answers(server_url):
        sys.exit(f"PostgreSQL at {urlparse(server_url).netloc} does not answer; set DATABASE_URL.")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    redis = devservices.start_redis(run_dir / "redis")
    port = devservices.free_port()
    env = dict(
        {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PLATFORM_TEST_"))},
        DATABASE_URL=urlparse(server_url)._replace(path=f"/{DB_NAME}").geturl(), REDIS_URL=redis.url,
        SECRET_KEY="bench-only", DEBUG="0", SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0", PLATFORM_BASE_DOMAIN="bench.test", PLATFORM_ADMIN_HOST=ADMIN_HOST,
        ALLOWED_HOSTS=f"{ADMIN_HOST},.bench.test", LOG_LEVEL="WARNING", API_RATE_LIMIT_PER_MINUTE="0",
        LOGIN_FAILURE_LIMIT="1000",
    )
    machine, load_before = machine_note(server_url), load_note()
    stack, failure, results = Stack(run_dir, env), None, {}
    try:
        recreate_databases(server_url, [DB_NAME])
        stack.manage("migrate_schemas", "--shared")
        stack.manage("collectstatic", "--noinput", "-v", "0")  # the admin's pages need the manifest
        out = stack.manage("shell", stdin=SETUP.format(password=PASSWORD))
        key = out.split("KEY ", 1)[1].strip()
        session_id = out.split("SESSION ", 1)[1].split()[0]
        stack.manage("fill_schema_pool")
        stack.start(port, args.web_workers)
        results = run(args, stack, f"http://127.0.0.1:{port}", key, session_id)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        failure = exc
    finally:
        stack.stop()
        recreate_databases(server_url, [DB_NAME], drop_only=True)
        redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    if failure:
        sys.exit(f"bench_api failed: {failure}")
    machine += f"; {load_before} at start, {load_note()} at end"
    print_table(machine, results, args)


if __name__ == "__main__":
    main()
