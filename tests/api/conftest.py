"""The API through the real server: gunicorn on a private port, keys made with the service."""

import subprocess
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from api.models import DEFAULT_SCOPES, SCOPES
from api.services import apikey_create
from tests.backups.conftest import backup_dir, run_backup_worker  # noqa: F401 - fixtures used here
from tests.conftest import TEST_ACTOR, gunicorn_start, gunicorn_stop, subprocess_env
from tests.domains.conftest import (  # noqa: F401 - fixtures for the end-to-end signup
    domain_settings,
    edge_settings,
    nginx_edge,
    pebble_for,
    platform_stack,
)
from tests.webhooks.conftest import receiver, webhook_worker  # noqa: F401 - fixtures used here

ADMIN_HOST = "admin.platform.test"
SERVER_ENV = {
    "PLATFORM_BASE_DOMAIN": "platform.test",
    "PLATFORM_ADMIN_HOST": ADMIN_HOST,
    "ALLOWED_HOSTS": f"{ADMIN_HOST},.platform.test",
    # Fuzzers leave half-sent requests behind: stop within the fixture's 10 s wait, even on a busy machine.
    "GUNICORN_CMD_ARGS": "--graceful-timeout 3",
}


class Api:
    """requests against the server, on one host, with one key (or none)."""

    def __init__(self, address: str, host: str = ADMIN_HOST, token: str | None = None):
        self.address, self.host, self.token = address, host, token
        self.session = requests.Session()

    def on(self, host: str, token: str | None = None) -> "Api":
        return Api(self.address, host, token)

    def call(self, method: str, path: str, *, token: str | None = "default", **kwargs) -> requests.Response:
        headers = {"Host": self.host, **kwargs.pop("headers", {})}
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, f"http://{self.address}{path}", headers=headers, timeout=60,
                                    **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs) -> requests.Response:
        return self.call("POST", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.call("DELETE", path, **kwargs)


def is_problem(response: requests.Response, status: int) -> dict:
    """The answer is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, (response.status_code, response.text[:800])
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


@pytest.fixture
def api_settings(settings):
    settings.PLATFORM_BASE_DOMAIN = "platform.test"
    settings.PLATFORM_ADMIN_HOST = ADMIN_HOST
    settings.ALLOWED_HOSTS = [ADMIN_HOST, ".platform.test", "testserver"]
    return settings


@pytest.fixture
def staff_key(api_settings):
    def make(scopes=None, **kwargs):
        return apikey_create(name=kwargs.pop("name", "test backend"),
                             scopes=list(scopes if scopes is not None else DEFAULT_SCOPES),
                             actor=TEST_ACTOR, **kwargs)

    return make


@pytest.fixture
def shop_key(api_settings):
    def make(tenant, scopes=("domains:read", "domains:write")):
        return apikey_create(name="owner's app", scopes=list(scopes), tenant=tenant, actor=TEST_ACTOR)

    return make


class ApiServers:
    """The app's gunicorn servers (2 workers each) kept for the session of one xdist worker, one per
    distinct environment: most API tests ask for the same one, and starting one costs seconds of
    CPU (each worker imports the project). The newest few are kept; older ones are stopped.

    What a server keeps between tests is made harmless: the database and Redis (cache, queues) are
    emptied between tests as before; the per-process route cache is off
    (TENANT_ROUTE_LOCAL_SECONDS=0 unless a test sets it), since a shop created by one test and
    re-created by the next gets a new schema; backups a server writes by itself go to a folder of
    the session (a test that reads them passes its own BACKUP_LOCAL_DIR, so gets its own server).
    """

    KEEP = 3

    def __init__(self, backups: Path):
        self.backup_dir = backups
        self.running: OrderedDict[tuple, tuple[subprocess.Popen, str]] = OrderedDict()

    def address(self, env: dict[str, str]) -> str:
        full = subprocess_env(**{"TENANT_ROUTE_LOCAL_SECONDS": "0", **SERVER_ENV, **env})
        full.pop("PYTEST_CURRENT_TEST", None)  # names the test that started it: not part of the key
        if "BACKUP_LOCAL_DIR" not in env:
            full["BACKUP_LOCAL_DIR"] = str(self.backup_dir)  # not the first test's own folder
        key = tuple(sorted(full.items()))
        found = self.running.pop(key, None)
        if found is not None and found[0].poll() is not None:
            found = None  # it died (a test may have killed it): start another
        if found is None:
            found = gunicorn_start(2, full)
        self.running[key] = found
        while len(self.running) > self.KEEP:
            gunicorn_stop(self.running.popitem(last=False)[1][0])
        return found[1]

    def stop_all(self) -> None:
        while self.running:
            gunicorn_stop(self.running.popitem()[1][0])


@pytest.fixture(scope="session")
def api_servers(django_db_setup, tmp_path_factory):
    # After django_db_setup, so stopped before the test database is dropped.
    servers = ApiServers(tmp_path_factory.mktemp("api-server-backups"))
    yield servers
    servers.stop_all()


@pytest.fixture
def api_server(api_servers, api_settings):
    """The app (2 workers) with these settings in its environment, shared with the other tests of
    this session that ask for the same; returns an Api on the control plane's host (no key yet)."""

    def start(**env: str) -> Api:
        return Api(api_servers.address(env))

    return start


ALL_SCOPES = list(SCOPES)
SOON = timedelta(seconds=2)


def expired_key(make):
    new = make(expires_at=timezone.now() + timedelta(hours=1))
    type(new.key).objects.filter(pk=new.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return new
