"""Control-plane routes answer only off shops' hosts: through a shop's platform subdomain or its
active custom domain, /admin/, /django-rq/, /internal/tls/ask, /metrics and /readyz are 404, even
for a client the metrics allow-list admits (the edge relays every shop request from loopback)."""

import pytest
from django.test import Client, override_settings

from core.db import connection
from tenants.models import Domain
from tests.domains.test_verification import shop

CONTROL_PLANE = ["/admin/", "/admin/login/", "/django-rq/", "/internal/tls/ask?domain=mine.example",
                 "/metrics", "/metrics/", "/readyz", "/readyz/"]


@pytest.fixture
def hosts(plans, domain_settings):
    connection.set_schema_to_public()
    tenant = shop(plans, "hostshop")
    Domain.objects.create(tenant=tenant, domain="mine.example", kind=Domain.Kind.CUSTOM,
                          status=Domain.Status.ACTIVE)
    yield domain_settings
    connection.set_schema_to_public()  # a routed request leaves the shop's schema selected


@pytest.mark.parametrize("host", ["hostshop.platform.test", "mine.example", "nosuchshop.platform.test"])
def test_control_plane_routes_are_404_on_shop_hosts(hosts, host):
    client = Client(HTTP_HOST=host)  # REMOTE_ADDR 127.0.0.1: what the app sees behind the edge
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=["127.0.0.1/32"], READYZ_MIN_WORKERS=0,
                           EDGE_ASK_ALLOWED_IPS=["127.0.0.1/32"]):
        for path in CONTROL_PLANE:
            response = client.get(path)
            assert response.status_code == 404, (host, path, response.status_code)
            body = response.content.decode()
            assert "platform_http_requests" not in body and '"checks"' not in body and body != "ok\n"
        # Liveness carries nothing and stays available on every host.
        assert client.get("/healthz").json() == {"status": "ok"}


def test_control_plane_routes_answer_on_the_admin_host_and_internal_addresses(hosts):
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=["127.0.0.1/32"], READYZ_MIN_WORKERS=0,
                           EDGE_ASK_ALLOWED_IPS=["127.0.0.1/32"]):
        admin = Client(HTTP_HOST="admin.platform.test")
        assert admin.get("/admin/").status_code == 302
        assert admin.get("/metrics").status_code == 200
        assert "ms" in admin.get("/readyz").json()["checks"]["database"]
        assert admin.get("/internal/tls/ask", {"domain": "mine.example"}).status_code == 200
    with override_settings(EDGE_ASK_ALLOWED_IPS=[], EDGE_ASK_SECRET="edge-secret", TRUSTED_PROXIES=[]):
        # On the admin host too, the ask endpoint is the edge's alone.
        assert admin.get("/internal/tls/ask", {"domain": "mine.example"}).status_code == 403
        asked = admin.get("/internal/tls/ask", {"domain": "mine.example"},
                          HTTP_X_EDGE_ASK_SECRET="edge-secret")
        assert asked.status_code == 200
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=["127.0.0.1/32"], READYZ_MIN_WORKERS=0):
        # Prometheus scrapes each web container by address (compose/prometheus.yml).
        for internal in ("10.0.0.7:8000", "web:8000", "127.0.0.1"):
            assert Client(HTTP_HOST=internal).get("/metrics").status_code == 200, internal
