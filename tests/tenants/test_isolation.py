"""Tenant isolation: no request, job or loop may ever read another tenant's rows.

Each test builds three shops whose product names carry their subdomain, then tries to make one
shop's reads land in another's schema: interleaved requests on one persistent connection, a worker
running jobs for different tenants back to back, a job that forgets to pick its tenant, and the
same traffic through a real PgBouncer in transaction pooling mode, where stock django-tenants
mixes tenants (its issue #1112). Control runs with the stock backend show the tests can fail.
"""

import http.client
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import django_rq
import pytest
from django.db import connection
from django.test import Client
from rq.job import Job

from storefront.models import Product
from tests.conftest import BASE_DIR, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
SHOPS = ("acme", "globex", "initech")


@pytest.fixture
def shops(make_tenant):
    tenants = []
    for subdomain in SHOPS:
        tenant = make_tenant(subdomain)
        connection.set_tenant(tenant)
        Product.objects.bulk_create(
            Product(name=f"{subdomain}-{i}", price=Decimal(i)) for i in range(1, 6)
        )
        connection.set_schema_to_public()
        tenants.append(tenant)
    return tenants


def foreign_products(subdomain: str, body: str) -> list[str]:
    return [s for s in SHOPS if s != subdomain and f"{s}-" in body]


def test_interleaved_requests_on_one_persistent_connection(shops):
    clients = {s: Client(HTTP_HOST=f"{s}.localhost") for s in SHOPS}
    for i in range(60):
        subdomain = SHOPS[i % 3]
        body = clients[subdomain].get("/").content.decode()
        assert f"{subdomain}-1" in body
        assert foreign_products(subdomain, body) == []


def test_owner_of_one_shop_cannot_log_in_to_another(shops):
    from django.contrib.auth import get_user_model

    connection.set_tenant(shops[0])
    owner = get_user_model().objects.get(username="owner@acme.test")
    owner.set_password("correct horse battery")
    owner.save()
    connection.set_schema_to_public()
    login = {"username": "owner@acme.test", "password": "correct horse battery"}
    assert Client(HTTP_HOST="acme.localhost").post("/account/login/", login).status_code == 302
    refused = Client(HTTP_HOST="globex.localhost").post("/account/login/", login)
    assert refused.status_code == 200 and b"correct username and password" in refused.content


def test_worker_running_jobs_for_different_tenants_back_to_back(shops, run_worker):
    queue = django_rq.get_queue("default")
    jobs = [
        (s, queue.enqueue("tests.tenants.isolation_probe.product_names", s))
        for _ in range(10)
        for s in SHOPS
    ]
    # Jobs that forget to pick a tenant, each right after a job that picked one.
    forgetful = [queue.enqueue("tests.tenants.isolation_probe.product_names_without_tenant")
                 for _ in range(3)]
    # One process, one connection, every job: the strictest case.
    run_worker("default", "--worker-class", "tenants.worker.TenantSafeSimpleWorker")
    redis = django_rq.get_connection("default")
    for subdomain, job in jobs:
        result = Job.fetch(job.id, connection=redis).return_value()
        assert result == [f"{subdomain}-{i}" for i in range(1, 6)]
    for job in forgetful:
        fetched = Job.fetch(job.id, connection=redis)
        # It ran in the public schema, which has no products table: it fails, it never leaks.
        assert fetched.get_status() == "failed"
        assert 'relation "storefront_product" does not exist' in fetched.latest_result().exc_string


def run_reader_loop(database_url: str, settings_module: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.tenants.isolation_probe", "150", "4"],
        cwd=BASE_DIR, env=subprocess_env(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=settings_module),
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # request and job loops through PgBouncer
def test_worker_loop_behind_pgbouncer_transaction_pooling(shops, pgbouncer):
    ours = run_reader_loop(pgbouncer, "platform_site.settings")
    assert ours == {"reads": 150 * 3 * 4, "wrong": 0}


@pytest.mark.slow  # request and job loops through PgBouncer
def test_stock_backend_behind_pgbouncer_leaks_so_the_test_can_fail(shops, pgbouncer):
    stock = run_reader_loop(pgbouncer, "tests.settings_stock_backend")
    assert stock["reads"] == 150 * 3 * 4
    assert stock["wrong"] > 0, "expected stock django-tenants to read the wrong schema here"


def fire_requests(address: str, count: int) -> tuple[int, int]:
    host, port = address.split(":")

    def one(i: int) -> tuple[bool, bool]:
        subdomain = SHOPS[i % 3]
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/", headers={"Host": f"{subdomain}.localhost"})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        ok = response.status == 200 and f"{subdomain}-1" in body
        return ok, bool(foreign_products(subdomain, body))

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(count)))
    return sum(ok for ok, _ in results), sum(leak for _, leak in results)


@pytest.mark.slow  # request and job loops through PgBouncer
def test_web_requests_behind_pgbouncer_transaction_pooling(shops, pgbouncer, gunicorn):
    address = gunicorn(workers=3, DATABASE_URL=pgbouncer, CONN_MAX_AGE="600")
    ok, leaked = fire_requests(address, 600)
    assert (ok, leaked) == (600, 0)


@pytest.mark.slow  # request and job loops through PgBouncer
def test_stock_backend_web_requests_leak_behind_pgbouncer(shops, pgbouncer, gunicorn):
    address = gunicorn(
        workers=3,
        DATABASE_URL=pgbouncer,
        CONN_MAX_AGE="600",
        DJANGO_SETTINGS_MODULE="tests.settings_stock_backend",
    )
    ok, leaked = fire_requests(address, 600)
    print(f"stock backend: {ok} correct pages, {leaked} with another shop's products")
    assert leaked > 0, "expected stock django-tenants to serve another shop's rows here"
