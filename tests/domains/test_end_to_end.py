"""End to end: an owner adds shop.example.test on the Domains page, proves it with a TXT record,
Pebble issues a certificate through a real HTTP-01 challenge answered via nginx, nginx reloads,
and an HTTPS request with SNI gets the owner's storefront with a chain that validates against
Pebble's root. Another shop keeps serving its own storefront.
"""

import re

import pytest
import requests
import urllib3
from django.db import connection

from core.models import AuditEvent
from storefront.models import Product
from tenants.models import Certificate, Domain
from tests.domains.components import wait_until
from tests.domains.conftest import set_owner_password

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def csrf(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def add_product(tenant, name: str) -> None:
    connection.set_tenant(tenant)
    try:
        Product.objects.create(name=name, price="9.99")
    finally:
        connection.set_schema_to_public()


@pytest.mark.parametrize("mode", ["per_domain", "shared"])
def test_custom_domain_end_to_end(make_tenant, platform_stack, tmp_path, settings, mode):
    stack = platform_stack
    # The worker issues the certificate and renders the edge in this mode.
    stack.env["EDGE_TLS_MODE"] = settings.EDGE_TLS_MODE = mode
    acme, globex = make_tenant("acme"), make_tenant("globex")
    add_product(acme, "Acme rocket skates")
    add_product(globex, "Globex doomsday device")
    password = set_owner_password(acme)

    # The owner logs in on the shop's platform host, through the edge.
    edge_http = f"http://127.0.0.1:{stack.http_port}"
    owner = requests.Session()
    owner.headers["Host"] = "acme.platform.test"
    login = owner.get(f"{edge_http}/account/login/")
    owner.post(f"{edge_http}/account/login/", data={
        "username": acme.owner_email, "password": password, "csrfmiddlewaretoken": csrf(login.text)})
    page = owner.get(f"{edge_http}/account/domains/")
    assert page.status_code == 200 and "Domains for Acme" in page.text

    added = owner.post(f"{edge_http}/account/domains/add/",
                       data={"domain": "shop.example.test", "csrfmiddlewaretoken": csrf(page.text)})
    assert "shop.example.test added" in added.text
    # The DNS table tells the owner the exact TXT record; publish it in the test DNS server.
    txt = re.search(r"<td>TXT</td><td><code>([^<]+)</code></td><td><code>([^<]+)</code>", added.text)
    assert txt.group(1) == "_platform-verify.shop.example.test"
    stack.dns.set_txt(txt.group(1), txt.group(2))
    stack.dns.add_a("shop.example.test", "127.0.0.1")

    domain = Domain.objects.get(domain="shop.example.test")
    checked = owner.post(f"{edge_http}/account/domains/{domain.pk}/check/",
                         data={"csrfmiddlewaretoken": csrf(added.text)})
    assert "Checking shop.example.test now" in checked.text  # queued: the worker below runs it

    # The worker checks the domain, issues the certificate (Pebble -> nginx:HTTP -> app for the
    # HTTP-01 answer), then renders and reloads the edge.
    stack.run_worker()
    domain.refresh_from_db()
    cert = Certificate.objects.get(domain=domain)
    assert cert.status == Certificate.Status.ISSUED, cert.last_error
    assert domain.status == Domain.Status.ACTIVE
    assert "server_name shop.example.test;" in (stack.edge_dir / "nginx.conf").read_text()
    assert AuditEvent.objects.filter(action="edge.rendered", details__reloaded=True).exists()

    # HTTPS with SNI to nginx on loopback; the chain must validate against Pebble's root.
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(stack.pebble.root_pem())
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1", stack.https_port, server_hostname="shop.example.test",
        assert_hostname="shop.example.test", ca_certs=str(root), cert_reqs="CERT_REQUIRED", retries=False,
    )
    response = pool.request("GET", "/", headers={"Host": "shop.example.test"})
    body = response.data.decode()
    assert response.status == 200
    assert 'data-shop="acme"' in body and "Acme rocket skates" in body
    assert "Globex" not in body
    # ...and it does not validate against anything else (a CA we made ourselves).
    other_ca = stack.pebble.ca_bundle
    stranger = urllib3.HTTPSConnectionPool(
        "127.0.0.1", stack.https_port, server_hostname="shop.example.test", ca_certs=str(other_ca),
        cert_reqs="CERT_REQUIRED", retries=False)
    with pytest.raises(urllib3.exceptions.SSLError):
        stranger.request("GET", "/", headers={"Host": "shop.example.test"})

    # Plain HTTP on the custom domain goes to HTTPS; the other shop keeps its own storefront.
    # (an old nginx worker may take a connection while the reload finishes)
    redirect = wait_until(
        lambda: (r := requests.get(edge_http, headers={"Host": "shop.example.test"},
                                   allow_redirects=False)).status_code == 301 and r,
        "the HTTP redirect",
    )
    assert redirect.headers["Location"] == f"https://shop.example.test:{stack.https_port}/"
    other = requests.get(edge_http, headers={"Host": "globex.platform.test"})
    assert other.status_code == 200 and 'data-shop="globex"' in other.text
    assert "Globex doomsday device" in other.text and "Acme" not in other.text
    page = owner.get(f"{edge_http}/account/domains/")
    assert "Active" in page.text and f"expires {cert.not_after:%Y-%m-%d}" in page.text
