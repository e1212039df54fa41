"""Fixtures shared by the whole suite: plans, tenants, the real RQ worker, clean schemas."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import django_rq
import pytest
from django.core.cache import cache
from django.core.management.commands import flush as flush_command
from django.db import connection

from core.audit import Actor
from platform_site import devservices
from tenants import routing
from tenants.models import Plan
from tenants.services import tenant_provision
from tests.warm_pool import WarmPool

BASE_DIR = Path(__file__).resolve().parent.parent
TEST_ACTOR = Actor.command("pytest")


def database_url_for_subprocesses() -> str:
    """The URL of the test database, for subprocesses (worker, gunicorn) that must share it."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "postgres") + (f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({"DATABASE_URL": database_url_for_subprocesses(), "DEBUG": "1"}, **extra)
    return env


_warm_pool: WarmPool | None = None


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database (one per xdist worker), with a warm pool of spare schemas (tests/warm_pool.py)."""
    global _warm_pool
    with django_db_blocker.unblock():
        _post_migrate_rows.update(_snapshot(POST_MIGRATE_TABLES))
        _warm_pool = WarmPool(database_url_for_subprocesses())
        _warm_pool.start()
    yield
    _warm_pool = None
    _post_migrate_rows.clear()


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n N`` (``--dist load``): the longest tests first, spread over the workers."""
    if config.getvalue("dist") != "load":
        return None
    from tests.xdist_schedule import WeightedScheduling

    return WeightedScheduling(config, log)


def pytest_collection_modifyitems(items):
    # The long end-to-end tests first: xdist hands tests out in this order, so they overlap the
    # many short ones instead of running alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# What post_migrate writes into the public schema (content types, permissions, the staff groups).
POST_MIGRATE_TABLES = ("django_content_type", "auth_permission", "auth_group", "auth_group_permissions")
_post_migrate_rows: dict[str, str] = {}


def _snapshot(tables) -> dict[str, str]:
    """Each table's rows as JSON, as they are after the test database was migrated."""
    with connection.cursor() as cursor:
        rows = {}
        for table in tables:
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT coalesce(json_agg(t), '[]')::text FROM {quoted} t")
            rows[table] = cursor.fetchone()[0]
        return rows


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """A cheaper flush at the end of each transactional test, with the same result.

    Django's ``flush`` is one TRUNCATE of every table (~0.3 s: new files for each table and index),
    then post_migrate re-creates content types, permissions and the staff groups (~0.2 s, some 150
    queries). Here the tables, which hold a handful of rows by then, are emptied with DELETE, in one
    transaction with the foreign keys (all DEFERRABLE) checked at its end, and the post_migrate
    tables get back the rows post_migrate wrote when the test database was migrated (the only
    receivers, contenttypes', auth's and ``tenants.roles``', write nothing else), so the flush
    skips post_migrate. Sequences are left alone, as by Django's default flush. Flushes that reset
    sequences or cascade are Django's own. Tests of post_migrate itself run ``migrate``, untouched.
    """
    ops = type(connection.ops)
    truncate = ops.sql_flush

    put_back = {"all": False}

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        put_back["all"] = False
        if reset_sequences or allow_cascade or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        statements = ["SET CONSTRAINTS ALL DEFERRED"]
        statements += [f"DELETE FROM {self.quote_name(table)}" for table in tables]
        for table, rows in _post_migrate_rows.items():
            if table in tables:
                literal = "'" + rows.replace("'", "''") + "'"
                statements.append(
                    f"INSERT INTO {self.quote_name(table)} "
                    f"SELECT * FROM json_populate_recordset(NULL::{self.quote_name(table)}, {literal})"
                )
        put_back["all"] = set(_post_migrate_rows) == set(POST_MIGRATE_TABLES) <= set(tables)
        return ["; ".join(statements)]

    def emit_post_migrate_signal(verbosity, interactive, db, **kwargs):
        if not put_back["all"]:
            emit(verbosity, interactive, db, **kwargs)

    emit = flush_command.emit_post_migrate_signal
    ops.sql_flush = sql_flush
    flush_command.emit_post_migrate_signal = emit_post_migrate_signal
    yield
    ops.sql_flush = truncate
    flush_command.emit_post_migrate_signal = emit


DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_setup"}


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Every test starts with empty caches and queues and, if it uses the database, a full pool of
    spare schemas (none with ``@pytest.mark.empty_pool``); transactional tests end with no schemas
    but the unclaimed spares."""
    routing._local.clear()
    cache.clear()
    django_rq.get_connection("default").flushdb()
    empty_pool = request.node.get_closest_marker("empty_pool") is not None
    uses_db = request.node.get_closest_marker("django_db") or DB_FIXTURES & set(request.fixturenames)
    if uses_db:
        request.getfixturevalue("django_db_setup")
        if empty_pool:
            _warm_pool.empty()
        else:
            _warm_pool.top_up()
    yield
    routing._local.clear()
    marker = request.node.get_closest_marker("django_db")
    if (marker and marker.kwargs.get("transaction")) or {"transactional_db", "live_server"} & set(
        request.fixturenames
    ):
        _warm_pool.drop_all_but_spares(keep_spares=not empty_pool)


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


@pytest.fixture
def pgbouncer():
    """PgBouncer 1.18 in transaction pooling mode, a pool of 2, in front of the test database.

    Yields the database URL through the pooler.
    """
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = devservices.free_port()
    s = connection.settings_dict
    (folder / "users.txt").write_text(f'"{s["USER"] or "postgres"}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{s['NAME']} = host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} "
        f"dbname={s['NAME']}\n"
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nauth_type = trust\nauth_file = {folder}/users.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\nunix_socket_dir =\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    cmd = ["pgbouncer", "-d", str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for child in folder.iterdir():
            shutil.chown(child, "postgres")
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True)
    url = f"postgres://{s['USER'] or 'postgres'}@127.0.0.1:{port}/{s['NAME']}"
    devservices.wait_for(lambda: devservices.postgres_answers_at(url), "pgbouncer")
    yield url
    pid = int((folder / "pgbouncer.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


def gunicorn_start(workers: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """gunicorn (sync workers, like production) on the project with this whole environment; returns
    the process and its address once it accepts connections."""
    port = devservices.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "platform_site.wsgi", "-w", str(workers), "-b",
         f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=BASE_DIR, env=env,
    )
    try:
        # Booting Django in each worker takes seconds on a busy 2-core machine: wait generously.
        devservices.wait_for(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True,
                             "gunicorn", timeout=60)
    except BaseException:
        gunicorn_stop(proc)
        raise
    return proc, f"127.0.0.1:{port}"


def gunicorn_stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def gunicorn():
    """Start gunicorn (sync workers, like production) on the project; yields a starter."""
    started = []

    def start(*, workers: int = 3, **env: str) -> str:
        proc, address = gunicorn_start(workers, subprocess_env(**env))
        started.append(proc)
        return address

    yield start
    for proc in started:
        gunicorn_stop(proc)


@pytest.fixture(scope="session")
def dns_server():
    """A real DNS server (pebble-challtestsrv) on a private port, for names the tests control."""
    from tests.domains.components import ChallTestSrv

    folder = Path(tempfile.mkdtemp(prefix="platform-dns-"))
    server = ChallTestSrv(folder)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """A real moto_server (the AWS API stand-in) for the session; tests reset it with /moto-api/reset."""
    port = devservices.free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115
    # One running task per service unless a deploy sets the count (moto does not run containers).
    env = {"PATH": "/usr/bin:/bin", "MOTO_ECS_SERVICE_RUNNING": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        devservices.wait_for(lambda: requests.get(f"{url}/moto-api/", timeout=1).ok, "moto_server",
                             timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
