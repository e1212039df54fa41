"""The owner's Domains page: add, DNS table, check now (rate-limited), remove, primary, access."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from core.models import AuditEvent
from tenants.models import Domain

pytestmark = pytest.mark.django_db(transaction=True)


def csrf_of(page) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()


def test_owner_adds_checks_and_sees_the_dns_table(make_tenant, owner_client, dns_server, settings):
    settings.CUSTOM_DOMAIN_CHECK_NOW_SECONDS = 60
    tenant = make_tenant("acme")
    client = owner_client(tenant)
    page = client.get("/account/domains/")
    assert page.status_code == 200 and b"Domains for Acme" in page.content
    assert b"allows 3 custom domains; you use 0" in page.content

    added = client.post("/account/domains/add/", {"domain": "Shop.Selfservice.example"}, follow=True)
    assert b"shop.selfservice.example added" in added.content
    domain = Domain.objects.get(domain="shop.selfservice.example")
    assert domain.tenant_id == tenant.pk
    text = added.content.decode()
    assert "_platform-verify.shop.selfservice.example" in text and domain.verification_token in text
    assert "acme.platform.test" in text and "Pending verification" in text
    event = AuditEvent.objects.get(action="domain.added", target=domain.domain)
    assert event.actor == "owner@acme.test@acme"

    checked = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
    assert b"TXT record _platform-verify.shop.selfservice.example is missing" in checked.content
    assert b"Verification failed" in checked.content

    dns_server.set_txt("_platform-verify.shop.selfservice.example", domain.verification_token)
    dns_server.set_cname("shop.selfservice.example", "acme.platform.test")
    too_soon = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
    assert b"was checked a moment ago; try again in 60 seconds" in too_soon.content
    settings.CUSTOM_DOMAIN_CHECK_NOW_SECONDS = 1
    from django.core.cache import cache

    cache.delete(f"domain-check-now:{domain.pk}")
    verified = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
    assert b"is verified; a certificate is on its way" in verified.content
    assert b"Certificate pending" in verified.content
    status = client.get("/account/domains/status.json").json()
    assert status["domains"][0]["status"] == "certificate_pending"


def test_bad_input_and_plan_limit_messages_on_the_page(make_tenant, owner_client):
    starter = make_tenant("tiny", plan="starter")
    client = owner_client(starter)
    page = client.post("/account/domains/add/", {"domain": "tiny.example"}, follow=True)
    assert b"does not include custom domains; upgrade your plan" in page.content
    growth = make_tenant("grow")
    client = owner_client(growth)
    page = client.post("/account/domains/add/", {"domain": "http://x.example/path"}, follow=True)
    assert b"looks like a URL" in page.content
    assert not Domain.objects.filter(kind=Domain.Kind.CUSTOM).exists()


def test_only_owners_of_this_shop_reach_the_page(make_tenant, owner_client):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    anonymous = Client(HTTP_HOST="acme.platform.test")
    assert anonymous.get("/account/domains/").status_code == 302
    # A plain customer account of the shop (not an owner) is refused.
    connection.set_tenant(acme)
    get_user_model().objects.create_user("customer", password="a-long-unusual-passphrase")
    connection.set_schema_to_public()
    customer = Client(HTTP_HOST="acme.platform.test")
    customer.post("/account/login/", {"username": "customer", "password": "a-long-unusual-passphrase"})
    assert customer.get("/account/domains/").status_code == 403
    # Globex's owner cannot touch Acme's domains, even by id.
    acme_owner = owner_client(acme)
    acme_owner.post("/account/domains/add/", {"domain": "acme-only.example"})
    domain = Domain.objects.get(domain="acme-only.example")
    globex_owner = owner_client(globex)
    assert globex_owner.post(f"/account/domains/{domain.pk}/remove/").status_code == 404
    assert globex_owner.post(f"/account/domains/{domain.pk}/check/").status_code == 404
    assert b"acme-only.example" not in globex_owner.get("/account/domains/").content
    # The session of Acme's owner does not open Globex's page.
    acme_owner.defaults["HTTP_HOST"] = "globex.platform.test"
    assert acme_owner.get("/account/domains/").status_code == 302
    assert Domain.objects.filter(pk=domain.pk).exists()


def test_csrf_is_enforced_and_remove_works(make_tenant, domain_settings):
    from tests.domains.conftest import set_owner_password

    tenant = make_tenant("acme")
    client = Client(HTTP_HOST="acme.platform.test", enforce_csrf_checks=True)
    login_page = client.get("/account/login/")
    client.post("/account/login/", {"username": tenant.owner_email, "password": set_owner_password(tenant),
                                    "csrfmiddlewaretoken": csrf_of(login_page)})
    assert client.post("/account/domains/add/", {"domain": "csrf.example"}).status_code == 403
    page = client.get("/account/domains/")
    client.post("/account/domains/add/", {"domain": "csrf.example", "csrfmiddlewaretoken": csrf_of(page)})
    domain = Domain.objects.get(domain="csrf.example")
    page = client.get("/account/domains/")
    removed = client.post(f"/account/domains/{domain.pk}/remove/", {"csrfmiddlewaretoken": csrf_of(page)},
                          follow=True)
    assert b"csrf.example removed" in removed.content
    assert not Domain.objects.filter(pk=domain.pk).exists()
