"""Verification against a real DNS server (pebble-challtestsrv) and the domain state machine."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.audit import Actor
from core.models import AuditEvent
from tenants.domains import services as domains
from tenants.errors import PlanLimitExceeded, TenantError, TenantValidationError
from tenants.models import Certificate, Domain, Tenant
from tenants.routing import route_for_host

ACTOR = Actor.command("pytest")
S = Domain.Status


def shop(plans, subdomain: str, plan: str = "growth") -> Tenant:
    """A tenant row (no schema needed: verification only touches public tables)."""
    tenant = Tenant.objects.create(
        subdomain=subdomain, schema_name=subdomain.replace("-", "_"), name=subdomain.title(),
        plan=plans[plan], owner_email=f"owner@{subdomain}.test", status=Tenant.Status.ACTIVE,
    )
    Domain.objects.create(tenant=tenant, domain=f"{subdomain}.platform.test", kind=Domain.Kind.PLATFORM,
                          status=S.ACTIVE, is_primary=True)
    return tenant


def publish_ownership(dns, domain: Domain) -> None:
    dns.set_txt(f"_platform-verify.{domain.domain}", domain.verification_token)


@pytest.fixture
def tenant(plans, domain_settings):
    return shop(plans, "acme")


def test_add_creates_a_pending_claim_with_a_token_and_expiry(tenant):
    domain = domains.domain_add(tenant=tenant, domain="Shop.Add-Test.example.", actor=ACTOR)
    assert domain.domain == "shop.add-test.example"
    assert domain.status == S.PENDING_VERIFICATION
    assert len(domain.verification_token) >= 30
    assert timedelta(days=6, hours=23) < domain.expires_at - timezone.now() <= timedelta(days=7)
    assert AuditEvent.objects.filter(action="domain.added", target="shop.add-test.example").exists()
    assert route_for_host("shop.add-test.example") is None


def test_txt_and_cname_verify_and_request_a_certificate(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="shop.verify-ok.example", actor=ACTOR)
    publish_ownership(dns_server, domain)
    dns_server.set_cname(domain.domain, "acme.platform.test")
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert result.changed
    assert domain.status == S.CERTIFICATE_PENDING
    assert domain.verified_at is not None and domain.expires_at is None
    assert Certificate.objects.get(domain=domain).status == Certificate.Status.PENDING
    rows = {r["type"]: r for r in domain.last_diagnosis["rows"]}
    assert rows["TXT"]["seen"] and rows["CNAME"]["seen"]
    # Verified is not routable: only an active domain (with its certificate) routes.
    assert route_for_host(domain.domain) is None


def test_a_record_to_the_edge_verifies_an_apex(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="apex-ok.example", actor=ACTOR)
    publish_ownership(dns_server, domain)
    dns_server.add_a(domain.domain, "127.0.0.1")
    assert domains.domain_verify(domain=domain, actor=ACTOR).changed
    assert Domain.objects.get(pk=domain.pk).status == S.CERTIFICATE_PENDING


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("nothing", "TXT record _platform-verify.{d} is missing: create it with the value"),
        ("wrong_txt", "not your token; set its value to"),
        ("cname_elsewhere", "CNAME {d} points to elsewhere.example; change it to acme.platform.test"),
        ("a_elsewhere", "{d} points to 192.0.2.7, which is not us; replace it with A records to 127.0.0.1"),
        ("a_conflict", "conflicting address records: remove 192.0.2.8"),
        ("no_routing", "{d} has no CNAME or A record: create CNAME {d} -> acme.platform.test"),
        ("caa", "CAA record on caa-block.example allows only digicert.com to issue certificates; "
                'add CAA 0 issue "letsencrypt.org"'),
    ],
)
def test_failures_say_exactly_what_is_wrong(tenant, dns_server, setup, problem):
    name = f"{setup.replace('_', '-')}.fail.example" if setup != "caa" else "shop.caa-block.example"
    domain = domains.domain_add(tenant=tenant, domain=name, actor=ACTOR)
    if setup != "nothing":
        txt = "someone-else" if setup == "wrong_txt" else domain.verification_token
        dns_server.set_txt(f"_platform-verify.{name}", txt)
    if setup in ("nothing", "wrong_txt", "caa"):
        dns_server.set_cname(name, "acme.platform.test")
    if setup == "cname_elsewhere":
        dns_server.set_cname(name, "elsewhere.example")
    if setup == "a_elsewhere":
        dns_server.add_a(name, "192.0.2.7")
    if setup == "a_conflict":
        dns_server.add_a(name, "127.0.0.1", "192.0.2.8")
    if setup == "caa":
        dns_server.add_caa("caa-block.example", "digicert.com")
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.VERIFICATION_FAILED
    assert problem.format(d=name) in domain.status_reason
    assert problem.format(d=name) in result.message
    assert domain.check_attempts == 1
    assert domain.next_check_at - domain.last_checked_at == domains.BACKOFF[1]
    assert route_for_host(name) is None


def test_caa_on_the_parent_that_allows_letsencrypt_passes(tenant, dns_server):
    dns_server.add_caa("caa-parent.example", "letsencrypt.org")
    domain = domains.domain_add(tenant=tenant, domain="shop.caa-parent.example", actor=ACTOR)
    publish_ownership(dns_server, domain)
    dns_server.set_cname(domain.domain, "acme.platform.test")
    assert domains.domain_verify(domain=domain, actor=ACTOR).changed


def test_dns_timeout_keeps_the_status_and_says_so(tenant, settings):
    domain = domains.domain_add(tenant=tenant, domain="timeout.example", actor=ACTOR)
    # A loopback port where nothing answers: every query times out.
    settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = ["127.0.0.1:9"]
    settings.CUSTOM_DOMAIN_DNS_TIMEOUT = 0.3
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.PENDING_VERIFICATION
    assert domain.check_attempts == 0
    assert "Could not check DNS" in domain.status_reason and "timed out" in domain.status_reason
    assert not result.changed


def test_backoff_grows_and_the_claim_expires(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="expiring.example", actor=ACTOR)
    now = timezone.now()
    delays = []
    for step in range(8):
        when = now + timedelta(hours=step)
        domains.domain_verify(domain=domain, actor=ACTOR, now=when)
        domain.refresh_from_db()
        delays.append(domain.next_check_at - when)
    assert delays == [*domains.BACKOFF[1:], domains.BACKOFF_LAST, domains.BACKOFF_LAST, domains.BACKOFF_LAST]
    result = domains.domain_verify(domain=domain, actor=ACTOR, now=now + timedelta(days=7, seconds=1))
    assert result.domain is None and "not verified in time" in result.message
    assert not Domain.objects.filter(domain="expiring.example").exists()
    assert AuditEvent.objects.filter(action="domain.expired", target="expiring.example").exists()


def _activate(domain: Domain) -> None:
    Certificate.objects.update_or_create(
        domain=domain, defaults={"status": Certificate.Status.ISSUED,
                                 "not_after": timezone.now() + timedelta(days=80)})
    Domain.objects.filter(pk=domain.pk).update(status=S.ACTIVE, verified_at=timezone.now(), expires_at=None)
    domain.refresh_from_db()


def test_active_domain_that_moves_stops_routing_returns_then_is_removed_after_grace(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="mover.example", actor=ACTOR)
    dns_server.set_cname(domain.domain, "acme.platform.test")
    _activate(domain)
    assert route_for_host("mover.example").subdomain == "acme"

    dns_server.set_cname(domain.domain, "other-host.example")
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.MOVED and domain.moved_at is not None
    assert "removed after 7 days" in domain.status_reason
    assert route_for_host("mover.example") is None

    dns_server.set_cname(domain.domain, "acme.platform.test")
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.ACTIVE and domain.moved_at is None
    assert route_for_host("mover.example").subdomain == "acme"

    dns_server.set_cname(domain.domain, "other-host.example")
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    later = domain.moved_at + timedelta(days=7, seconds=1)
    result = domains.domain_verify(domain=domain, actor=ACTOR, now=later)
    assert result.domain is None
    assert not Domain.objects.filter(domain="mover.example").exists()
    assert AuditEvent.objects.filter(action="domain.removed_after_move", target="mover.example").exists()
    assert route_for_host("mover.example") is None


def test_dns_outage_never_marks_an_active_domain_moved(tenant, dns_server, settings):
    domain = domains.domain_add(tenant=tenant, domain="steady.example", actor=ACTOR)
    _activate(domain)
    settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = ["127.0.0.1:9"]
    settings.CUSTOM_DOMAIN_DNS_TIMEOUT = 0.3
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.ACTIVE


def test_another_shops_domain_is_refused(plans, tenant, dns_server):
    other = shop(plans, "rival")
    domain = domains.domain_add(tenant=tenant, domain="taken.example", actor=ACTOR)
    with pytest.raises(TenantValidationError, match="already in use"):
        domains.domain_add(tenant=other, domain="TAKEN.example", actor=ACTOR)
    with pytest.raises(TenantValidationError, match="already on your list"):
        domains.domain_add(tenant=tenant, domain="taken.example", actor=ACTOR)
    _activate(domain)
    with pytest.raises(TenantValidationError, match="already in use"):
        domains.domain_add(tenant=other, domain="taken.example", actor=ACTOR)


def test_a_lapsed_claim_does_not_block_the_real_owner(plans, tenant, dns_server):
    squatter = shop(plans, "squatter")
    claim = domains.domain_add(tenant=squatter, domain="lapsed.example", actor=ACTOR)
    Domain.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    mine = domains.domain_add(tenant=tenant, domain="lapsed.example", actor=ACTOR)
    assert mine.tenant_id == tenant.pk
    assert AuditEvent.objects.filter(action="domain.expired", tenant=squatter).exists()


def test_the_squatter_cannot_verify_with_the_owners_token(plans, tenant, dns_server):
    squatter = shop(plans, "squat2")
    claim = domains.domain_add(tenant=squatter, domain="owned.example", actor=ACTOR)
    # The real owner publishes a different token: the squatter's claim stays unverified.
    dns_server.set_txt("_platform-verify.owned.example", "the-real-owners-token")
    dns_server.set_cname("owned.example", "squat2.platform.test")
    domains.domain_verify(domain=claim, actor=ACTOR)
    assert Domain.objects.get(pk=claim.pk).status == S.VERIFICATION_FAILED


def test_plan_limits(plans, domain_settings):
    starter = shop(plans, "tiny", plan="starter")
    with pytest.raises(PlanLimitExceeded, match=r"Your plan \(Starter\) does not include custom domains"):
        domains.domain_add(tenant=starter, domain="tiny.example", actor=ACTOR)
    assert not Domain.objects.filter(domain="tiny.example").exists()
    growth = shop(plans, "grow")
    for i in range(3):
        domains.domain_add(tenant=growth, domain=f"d{i}.grow.example", actor=ACTOR)
    with pytest.raises(PlanLimitExceeded, match=r"allows 3 custom domains and you have 3; remove one"):
        domains.domain_add(tenant=growth, domain="d3.grow.example", actor=ACTOR)


def test_remove_and_make_primary(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="primary.example", actor=ACTOR)
    with pytest.raises(TenantError, match="only an active domain can be primary"):
        domains.domain_make_primary(domain=domain, actor=ACTOR)
    _activate(domain)
    domains.domain_make_primary(domain=domain, actor=ACTOR)
    assert list(Domain.objects.filter(tenant=tenant, is_primary=True).values_list("domain", flat=True)) == [
        "primary.example"
    ]
    platform = Domain.objects.get(domain="acme.platform.test")
    with pytest.raises(TenantValidationError, match="platform address; it cannot be removed"):
        domains.domain_remove(domain=platform, actor=ACTOR)
    domains.domain_remove(domain=domain, actor=ACTOR)
    assert route_for_host("primary.example") is None
    assert AuditEvent.objects.filter(action="domain.removed", target="primary.example").exists()


@pytest.mark.django_db(transaction=True)
def test_two_tenants_racing_for_one_domain_one_wins(plans, domain_settings):
    a, b = shop(plans, "racer-a"), shop(plans, "racer-b")
    outcomes, barrier = [], threading.Barrier(2)

    def claim(tenant):
        barrier.wait()
        try:
            domains.domain_add(tenant=tenant, domain="race.example", actor=ACTOR)
            outcomes.append("won")
        except TenantValidationError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(t,)) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes)[-1] == "won" and outcomes.count("won") == 1
    assert "already in use" in [o for o in outcomes if o != "won"][0]
    assert Domain.objects.filter(domain="race.example").count() == 1


@pytest.mark.django_db(transaction=True)  # worker threads use their own connections
def test_due_domains_are_checked_in_parallel(tenant, dns_server, settings):
    import django_rq

    settings.CUSTOM_DOMAIN_CHECK_CONCURRENCY = 2
    names = [f"bulk{i}.example" for i in range(5)]
    added = [domains.domain_add(tenant=tenant, domain=n, actor=ACTOR) for n in names[:3]]
    for d in added[:2]:
        publish_ownership(dns_server, d)
        dns_server.set_cname(d.domain, "acme.platform.test")
    due = domains.domains_due(now=timezone.now() + timedelta(minutes=2))
    results = domains.domains_verify(domains=due, actor=ACTOR)
    statuses = dict(Domain.objects.filter(domain__in=names).values_list("domain", "status"))
    assert len(results) == 3
    assert statuses == {"bulk0.example": S.CERTIFICATE_PENDING, "bulk1.example": S.CERTIFICATE_PENDING,
                        "bulk2.example": S.VERIFICATION_FAILED}
    # The two certificate requests were queued in one batch.
    queued = django_rq.get_queue("default").get_jobs()
    assert sorted(job.args[0] for job in queued) == sorted(d.pk for d in added[:2])
    assert {job.func_name for job in queued} == {"tenants.domains.jobs.issue_certificate_job"}


def test_ownership_once_proven_stays_proven_while_dns_moves(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="two-step.example", actor=ACTOR)
    publish_ownership(dns_server, domain)
    dns_server.add_a(domain.domain, "192.0.2.99")  # still on the old host
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.VERIFICATION_FAILED and domain.ownership_verified_at is not None
    assert "TXT" not in result.message and "192.0.2.99, which is not us" in result.message
    # The owner removes the TXT record and moves DNS to us: verified.
    dns_server.clear_txt(f"_platform-verify.{domain.domain}")
    dns_server.clear_a(domain.domain)
    dns_server.add_a(domain.domain, "127.0.0.1")
    assert domains.domain_verify(domain=domain, actor=ACTOR).changed
    assert Domain.objects.get(pk=domain.pk).status == S.CERTIFICATE_PENDING
