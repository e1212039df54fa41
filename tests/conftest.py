"""Fixtures shared by the whole suite: plans, tenants, the real RQ worker, clean schemas."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import django_rq
import pytest
from django.core.cache import cache
from django.db import connection

from tenants import routing
from tenants.audit import Actor
from tenants.models import Plan
from tenants.services import tenant_provision

BASE_DIR = Path(__file__).resolve().parent.parent
TEST_ACTOR = Actor.command("pytest")


def test_database_url() -> str:
    """The URL of the test database, for subprocesses (worker, gunicorn) that must share it."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "postgres") + (f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=test_database_url(), DEBUG="1", **extra)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def drop_tenant_schemas() -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') "
            "AND nspname NOT LIKE 'pg\\_%'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Every test starts with empty caches and queues; transactional tests end with no schemas."""
    routing._local.clear()
    cache.clear()
    django_rq.get_connection("default").flushdb()
    yield
    routing._local.clear()
    if "transactional_db" in request.fixturenames or "live_server" in request.fixturenames:
        drop_tenant_schemas()


@pytest.fixture
def plans(db):
    return {
        "starter": Plan.objects.create(name="Starter", slug="starter", max_products=3, max_custom_domains=0),
        "growth": Plan.objects.create(
            name="Growth", slug="growth", monthly_price=49, max_products=100, max_custom_domains=3
        ),
        "retired": Plan.objects.create(name="Retired", slug="retired", is_active=False),
    }


@pytest.fixture
def make_tenant(plans):
    def make(subdomain: str, plan: str = "growth", **kwargs):
        return tenant_provision(
            subdomain=subdomain,
            name=kwargs.pop("name", subdomain.title()),
            plan=plan,
            owner_email=kwargs.pop("owner_email", f"owner@{subdomain}.test"),
            actor=TEST_ACTOR,
        ).tenant

    return make


@pytest.fixture
def run_worker():
    """Run the real RQ worker (a separate process, like production) until the queues are empty."""

    def run(*queues: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", "rqworker", *(queues or ("default", "long")), "--burst"],
            cwd=BASE_DIR, env=subprocess_env(), capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run
