"""The owner's Domains page: add, DNS table, check now (rate-limited), remove, primary, access."""

import re

import django_rq
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test import Client

from core.models import AuditEvent
from tenants.models import Domain

pytestmark = pytest.mark.django_db(transaction=True)


def csrf_of(page) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()


def worker_sees_domain_settings(monkeypatch, settings) -> None:
    """The real RQ worker is another process: give it this test's verification settings."""
    for name in ("PLATFORM_BASE_DOMAIN", "CUSTOM_DOMAIN_DNS_TIMEOUT", "CUSTOM_DOMAIN_CNAME_TARGET"):
        monkeypatch.setenv(name, str(getattr(settings, name)))
    for name in ("CUSTOM_DOMAIN_DNS_NAMESERVERS", "CUSTOM_DOMAIN_EDGE_IPV4", "OUTBOUND_ALLOWED_NETWORKS"):
        monkeypatch.setenv(name, ",".join(getattr(settings, name)))


def test_owner_adds_checks_and_sees_the_dns_table(make_tenant, owner_client, dns_server, settings, run_worker,
                                                  monkeypatch):
    settings.CUSTOM_DOMAIN_CHECK_NOW_SECONDS = 60
    tenant = make_tenant("acme")
    client = owner_client(tenant)
    worker_sees_domain_settings(monkeypatch, settings)
    django_rq.get_queue("default").empty()  # provisioning's pool refill: not this test's business
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

    # "Check now" only queues the check: nothing is looked up inside the web request.
    checked = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
    assert b"Checking shop.selfservice.example now; the result appears here" in checked.content
    assert b"Checking\xe2\x80\xa6" in checked.content
    domain.refresh_from_db()
    assert domain.last_checked_at is None
    queued = django_rq.get_queue("default").jobs
    assert [j.func_name for j in queued] == ["tenants.domains.jobs.verify_domain_job"]
    assert queued[0].args == (domain.pk, "tenant_user", "owner@acme.test@acme")
    assert client.get("/account/domains/status.json").json()["domains"][0]["checking"] is True

    # The real worker runs it; the page (and its status poll) show the result.
    run_worker("default")
    status = client.get("/account/domains/status.json").json()["domains"][0]
    assert status["checking"] is False and status["status"] == "verification_failed"
    page = client.get("/account/domains/")
    assert b"TXT record _platform-verify.shop.selfservice.example is missing" in page.content
    assert b"Verification failed" in page.content and b"Checking\xe2\x80\xa6" not in page.content

    dns_server.set_txt("_platform-verify.shop.selfservice.example", domain.verification_token)
    dns_server.set_cname("shop.selfservice.example", "acme.platform.test")
    too_soon = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
    assert b"was checked a moment ago; try again in 60 seconds" in too_soon.content
    assert not django_rq.get_queue("default").jobs
    cache.delete(f"domain-check-now:{domain.pk}")
    client.post(f"/account/domains/{domain.pk}/check/")
    run_worker("default")
    verified = client.get("/account/domains/")
    assert b"Certificate pending" in verified.content
    status = client.get("/account/domains/status.json").json()
    assert status["domains"][0]["status"] == "certificate_pending"


def test_check_now_is_limited_per_shop(make_tenant, owner_client, settings):
    settings.CUSTOM_DOMAIN_CHECK_NOW_PER_MINUTE = 2
    acme, globex = make_tenant("acme"), make_tenant("globex")
    client = owner_client(acme)
    for name in ("one.limit.example", "two.limit.example", "three.limit.example"):
        client.post("/account/domains/add/", {"domain": name})
    one, two, three = Domain.objects.filter(tenant=acme, kind=Domain.Kind.CUSTOM).order_by("pk")
    for domain in (one, two):
        pressed = client.post(f"/account/domains/{domain.pk}/check/", follow=True)
        assert f"Checking {domain.domain} now".encode() in pressed.content
    limited = client.post(f"/account/domains/{three.pk}/check/", follow=True).content
    assert b"Your shop may start 2 checks a minute and has used them; try again in a minute" in limited
    checks = [j for j in django_rq.get_queue("default").jobs if j.func_name.endswith("verify_domain_job")]
    assert [j.args[0] for j in checks] == [one.pk, two.pk]
    # The refused press did not hold the domain: once the minute has passed it may run.
    assert cache.get(f"domain-check-now:{three.pk}") is None
    # Another shop has its own budget.
    other = owner_client(globex)
    other.post("/account/domains/add/", {"domain": "globex.limit.example"})
    mine = Domain.objects.get(domain="globex.limit.example")
    assert b"Checking globex.limit.example now" in other.post(f"/account/domains/{mine.pk}/check/",
                                                              follow=True).content


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
