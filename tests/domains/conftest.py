"""Fixtures for the custom-domain tests: real DNS, ACME and nginx servers on private ports."""

import tempfile
from pathlib import Path

import pytest

from tenants import dns_checks
from tests.domains.components import ChallTestSrv


@pytest.fixture(scope="session")
def dns_server():
    folder = Path(tempfile.mkdtemp(prefix="platform-dns-"))
    server = ChallTestSrv(folder)
    yield server
    server.stop()


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
    from tenants.edge import edge_render
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
