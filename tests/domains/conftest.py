"""Fixtures for the custom-domain tests: real DNS, ACME and nginx servers on private ports."""

import tempfile
from pathlib import Path

import pytest

from tenants.domains import dns_checks


@pytest.fixture
def domain_settings(settings, dns_server):
    """Point verification at the test DNS server; the edge answers on 127.0.0.1."""
    settings.PLATFORM_BASE_DOMAIN = "platform.test"
    settings.PLATFORM_ADMIN_HOST = "admin.platform.test"
    settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = [dns_server.nameserver]
    settings.CUSTOM_DOMAIN_DNS_TIMEOUT = 2.0
    settings.CUSTOM_DOMAIN_EDGE_IPV4 = ["127.0.0.1"]
    settings.CUSTOM_DOMAIN_EDGE_IPV6 = []
    settings.CUSTOM_DOMAIN_CNAME_TARGET = ""
    settings.ALLOWED_HOSTS = ["admin.platform.test", ".platform.test", "testserver"]
    yield settings
    dns_checks._resolver = None


def set_owner_password(tenant, password: str = "a-long-unusual-passphrase") -> str:
    from django.contrib.auth import get_user_model
    from django.db import connection

    connection.set_tenant(tenant)
    try:
        owner = get_user_model().objects.get(username=tenant.owner_email)
        owner.set_password(password)
        owner.save()
    finally:
        connection.set_schema_to_public()
    return password


@pytest.fixture
def owner_client(domain_settings):
    """A logged-in browser session for a shop's owner, on the shop's platform host."""
    from django.test import Client

    def make(tenant):
        client = Client(HTTP_HOST=f"{tenant.subdomain}.platform.test")
        password = set_owner_password(tenant)
        response = client.post("/account/login/", {"username": tenant.owner_email, "password": password})
        assert response.status_code == 302, response.content[:500]
        return client

    return make


@pytest.fixture
def pebble_for(dns_server, tmp_path, settings):
    """Start Pebble validating HTTP-01 on the given port; points ACME settings at it."""
    from tests.domains.components import Pebble

    started = []

    def start(http_port: int) -> Pebble:
        pebble = Pebble(tmp_path / f"pebble{len(started)}", dns_server, http_port)
        started.append(pebble)
        settings.ACME_DIRECTORY_URL = pebble.directory_url
        settings.ACME_CA_BUNDLE = str(pebble.ca_bundle)
        settings.ACME_TIMEOUT_SECONDS = 60
        return pebble

    yield start
    for pebble in started:
        pebble.stop()


@pytest.fixture
def edge_settings(settings, tmp_path):
    settings.EDGE_DIR = tmp_path / "edge"
    return settings


@pytest.fixture
def nginx_edge(edge_settings):
    """A real nginx serving EDGE_DIR on private ports, started from an initial render."""
    import os

    from platform_site.devservices import free_port
    from tenants.domains.edge import edge_render
    from tests.conftest import TEST_ACTOR
    from tests.domains.components import Nginx

    folder = Path(tempfile.mkdtemp(prefix="platform-edge-"))
    os.chmod(folder, 0o755)  # workers run as nobody
    edge_settings.EDGE_DIR = folder
    edge_settings.EDGE_HTTP_PORT = free_port()
    edge_settings.EDGE_HTTPS_PORT = free_port()
    edge_render(actor=TEST_ACTOR, reload=False)
    server = Nginx(folder)
    server.start()
    yield server
    server.stop()


class Stack:
    """The whole custom-domain path for real: test DNS, Pebble, nginx edge, gunicorn app, RQ worker."""

    def __init__(self, *, dns, nginx, pebble, app: str, env: dict, settings):
        self.dns, self.nginx, self.pebble, self.app, self.env = dns, nginx, pebble, app, env
        self.http_port, self.https_port = settings.EDGE_HTTP_PORT, settings.EDGE_HTTPS_PORT
        self.edge_dir = settings.EDGE_DIR

    def run_worker(self) -> str:
        import subprocess
        import sys

        from tests.conftest import BASE_DIR

        result = subprocess.run(
            [sys.executable, "manage.py", "rqworker", "default", "--burst"], cwd=BASE_DIR, env=self.env,
            capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr


@pytest.fixture
def platform_stack(domain_settings, dns_server, nginx_edge, pebble_for, gunicorn):
    from tenants.domains.edge import edge_render
    from tests.conftest import TEST_ACTOR, subprocess_env

    settings = domain_settings
    pebble = pebble_for(settings.EDGE_HTTP_PORT)
    settings.CUSTOM_DOMAIN_HTTP_CHECK_PORT = settings.EDGE_HTTP_PORT
    env_settings = {
        "PLATFORM_BASE_DOMAIN": "platform.test",
        "PLATFORM_ADMIN_HOST": "admin.platform.test",
        "ALLOWED_HOSTS": "admin.platform.test,.platform.test",
        "CUSTOM_DOMAIN_DNS_NAMESERVERS": dns_server.nameserver,
        "CUSTOM_DOMAIN_DNS_TIMEOUT": "2",
        "CUSTOM_DOMAIN_EDGE_IPV4": "127.0.0.1",
        "CUSTOM_DOMAIN_HTTP_CHECK_PORT": str(settings.EDGE_HTTP_PORT),
        "CUSTOM_DOMAIN_CHECK_NOW_SECONDS": "1",
        "ACME_DIRECTORY_URL": pebble.directory_url,
        "ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "ACME_TIMEOUT_SECONDS": "60",
        "EDGE_DIR": str(settings.EDGE_DIR),
        "EDGE_HTTP_PORT": str(settings.EDGE_HTTP_PORT),
        "EDGE_HTTPS_PORT": str(settings.EDGE_HTTPS_PORT),
    }
    app = gunicorn(workers=2, **env_settings)
    env_settings["EDGE_UPSTREAM"] = app
    settings.EDGE_UPSTREAM = app
    edge_render(actor=TEST_ACTOR)
    return Stack(dns=dns_server, nginx=nginx_edge, pebble=pebble, app=app,
                 env=subprocess_env(**env_settings), settings=settings)
