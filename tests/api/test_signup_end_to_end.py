"""The SaaS's signup, end to end through the API: create a shop twice with one Idempotency-Key (one
shop), add its custom domain, set the DNS records the API gives, ask for a check, and follow the
domain to active with a certificate from Pebble, served by the nginx edge."""

import pytest

from tenants.models import Tenant
from tests.api.conftest import ADMIN_HOST, Api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_signup_through_the_api_to_an_active_custom_domain(platform_stack, plans, staff_key):
    stack = platform_stack
    api = Api(stack.app, ADMIN_HOST, staff_key().token)
    signup = {"subdomain": "acme", "name": "Acme", "plan": "growth", "owner_email": "owner@acme.example"}
    headers = {"Idempotency-Key": "signup-7f3c"}
    first = api.post("/api/v1/tenants", signup, headers=headers)
    retried = api.post("/api/v1/tenants", signup, headers=headers)
    assert (first.status_code, retried.status_code) == (201, 201), first.text
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert Tenant.objects.filter(subdomain="acme").count() == 1

    added = api.post("/api/v1/tenants/acme/domains", {"domain": "shop.example.test"})
    assert added.status_code == 201, added.text
    records = {r["type"]: r for r in added.json()["dns_records"]}
    stack.dns.set_txt(records["TXT"]["name"], records["TXT"]["value"])
    stack.dns.add_a("shop.example.test", "127.0.0.1")
    assert api.post("/api/v1/tenants/acme/domains/shop.example.test/check").status_code == 202

    stack.run_worker()  # the check, then the certificate from Pebble, then the edge
    domain = api.get("/api/v1/tenants/acme/domains/shop.example.test").json()
    assert domain["status"] == "active", domain
    assert domain["ownership_verified"] and domain["certificate"]["status"] == "issued"
    assert all(r["seen"] for r in domain["dns_records"] if r["type"] == "TXT")
    health = api.get("/api/v1/tenants/acme/health").json()
    assert [c["domain"] for c in health["certificates"]] == ["shop.example.test"]
    assert health["certificates"][0]["days_left"] > 1
    assert "server_name shop.example.test;" in (stack.edge_dir / "nginx.conf").read_text()
