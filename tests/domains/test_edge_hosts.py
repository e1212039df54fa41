"""Through the real nginx edge and a real gunicorn app: shops' hosts (platform subdomains and
custom domains, in both TLS modes) serve the storefront and the ACME answers, and never the
control plane's paths (/metrics, /readyz, /admin/, /django-rq/, /internal/), even with the app
configured as loosely as the defaults allow (METRICS_ALLOWED_IPS loopback, no TRUSTED_PROXIES:
the app sees every edge request as coming from 127.0.0.1)."""

import subprocess

import pytest
import requests
import urllib3
from cryptography import x509
from django.utils import timezone

from core.crypto import secret_encrypt
from storefront.models import Product
from tenants.domains.edge import edge_render
from tenants.models import AcmeChallenge, Certificate, Domain
from tests.conftest import TEST_ACTOR
from tests.domains.components import make_tls_files, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REFUSED = ["/metrics", "/metrics/", "/%6detrics", "//metrics", "/readyz", "/readyz/", "/admin/",
           "/admin/login/", "/django-rq/", "/internal/tls/ask?domain=shop.edgehosts.example"]
CUSTOM = "shop.edgehosts.example"
NGINX_404 = "<center>nginx"


def _custom_domain(tenant, tmp_path) -> None:
    ca, cert_path, key_path = make_tls_files(tmp_path / CUSTOM, [CUSTOM])
    domain = Domain.objects.create(tenant=tenant, domain=CUSTOM, kind=Domain.Kind.CUSTOM,
                                   status=Domain.Status.ACTIVE)
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    Certificate.objects.create(
        domain=domain, status=Certificate.Status.ISSUED, not_after=leaf.not_valid_after_utc,
        chain_encrypted=secret_encrypt(cert_path.read_bytes() + ca.read_bytes()),
        key_encrypted=secret_encrypt(key_path.read_bytes()), issued_at=timezone.now(),
    )


def _one_worker(nginx) -> bool:
    """True once a reload has finished: old workers still take connections while they shut down."""
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(nginx.process.proc.pid)],
                         capture_output=True, text=True).stdout.splitlines()
    return len(out) == 1 and "shutting down" not in out[0]


def _https(port: int):
    pool = urllib3.HTTPSConnectionPool("127.0.0.1", port, server_hostname=CUSTOM, cert_reqs="CERT_NONE",
                                       assert_hostname=False, retries=False)

    def get(path: str) -> urllib3.BaseHTTPResponse:
        return pool.request("GET", path, headers={"Host": CUSTOM}, redirect=False)

    return get


def test_shop_hosts_never_reach_control_plane_paths(domain_settings, nginx_edge, gunicorn, make_tenant,
                                                      tmp_path):
    settings = domain_settings
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    shop = make_tenant("edgehosts")
    from django.db import connection

    connection.set_tenant(shop)
    Product.objects.create(name="Edge-tested teapot", price="9.99")
    connection.set_schema_to_public()
    _custom_domain(shop, tmp_path)
    AcmeChallenge.objects.create(token="edge-tok", domain=CUSTOM, key_authorization="edge-tok.thumb")

    app = gunicorn(workers=1, PLATFORM_BASE_DOMAIN="platform.test", PLATFORM_ADMIN_HOST="admin.platform.test",
                   ALLOWED_HOSTS="admin.platform.test,.platform.test", METRICS_TOKEN="",
                   METRICS_ALLOWED_IPS="127.0.0.1/32,::1/128", TRUSTED_PROXIES="", EDGE_ASK_SECRET="",
                   EDGE_ASK_ALLOWED_IPS="127.0.0.1/32")
    settings.EDGE_UPSTREAM = app
    # The app itself, asked directly from loopback, does serve /metrics: the edge must not pass it on.
    assert requests.get(f"http://{app}/metrics", headers={"Host": "admin.platform.test"}).status_code == 200

    http = f"http://127.0.0.1:{settings.EDGE_HTTP_PORT}"
    for mode in ("per_domain", "shared"):
        settings.EDGE_TLS_MODE = mode
        assert edge_render(actor=TEST_ACTOR).reloaded
        wait_until(lambda: _one_worker(nginx_edge), "the reload to finish")
        https = _https(settings.EDGE_HTTPS_PORT)
        # The storefront answers on both of the shop's hosts (once the reload has taken effect).
        sub = wait_until(
            lambda: (r := requests.get(http, headers={"Host": "edgehosts.platform.test"})).status_code == 200
            and r, f"the storefront through the edge ({mode})",
        )
        assert "Edge-tested teapot" in sub.text
        custom = wait_until(lambda get=https: (r := get("/")).status == 200 and r,
                            f"the custom domain ({mode})")
        assert "Edge-tested teapot" in custom.data.decode()
        # HTTP-01 answers still reach the app on the custom domain's plain HTTP port.
        acme = requests.get(f"{http}/.well-known/acme-challenge/edge-tok", headers={"Host": CUSTOM})
        assert acme.status_code == 200 and acme.text == "edge-tok.thumb"
        # Liveness is harmless anywhere.
        assert requests.get(f"{http}/healthz", headers={"Host": "edgehosts.platform.test"}).status_code == 200

        for path in REFUSED:
            on_sub = requests.get(f"{http}{path}", headers={"Host": "edgehosts.platform.test"},
                                  allow_redirects=False)
            # Refused by nginx itself (its own 404 page), not left to the app behind it.
            assert on_sub.status_code == 404, (mode, path, on_sub.status_code, on_sub.text[:200])
            assert NGINX_404 in on_sub.text, (mode, path, on_sub.text[:200])
            on_custom = https(path)
            assert on_custom.status == 404, (mode, path, on_custom.status, on_custom.data[:200])
            assert NGINX_404 in on_custom.data.decode(), (mode, path)
            # Plain HTTP on the custom domain refuses too, rather than redirecting to them.
            plain = requests.get(f"{http}{path}", headers={"Host": CUSTOM}, allow_redirects=False)
            assert plain.status_code == 404 and NGINX_404 in plain.text, (mode, path, plain.status_code)

        # The admin host keeps the admin, but machine endpoints are for scraping the app directly.
        admin = requests.get(f"{http}/admin/", headers={"Host": "admin.platform.test"}, allow_redirects=False)
        assert admin.status_code == 302 and "/admin/login/" in admin.headers["Location"]
        for path in ("/metrics", "/readyz", "/internal/tls/ask?domain=x.example"):
            on_admin = requests.get(f"{http}{path}", headers={"Host": "admin.platform.test"})
            assert on_admin.status_code == 404 and NGINX_404 in on_admin.text, (mode, path)

    config = (settings.EDGE_DIR / "nginx.conf").read_text()
    assert "proxy_set_header X-Real-IP $remote_addr;" in config
