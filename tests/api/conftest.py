"""The API through the real server: gunicorn on a private port, keys made with the service."""

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from api.models import DEFAULT_SCOPES, SCOPES
from api.services import apikey_create
from tests.backups.conftest import backup_dir, run_backup_worker  # noqa: F401 - fixtures used here
from tests.conftest import TEST_ACTOR
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


@pytest.fixture
def api_server(gunicorn, api_settings):
    """Start the app (2 workers); returns an Api on the control plane's host (no key yet)."""

    def start(**env: str) -> Api:
        return Api(gunicorn(workers=2, **{**SERVER_ENV, **env}))

    return start


ALL_SCOPES = list(SCOPES)
SOON = timedelta(seconds=2)


def expired_key(make):
    new = make(expires_at=timezone.now() + timedelta(hours=1))
    type(new.key).objects.filter(pk=new.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return new
