"""Nobody learns which domains other shops hold: /internal/tls/ask answers only the edge, and
domain_add says "already in use" and nothing more about another shop's claim."""

import pytest
from django.test import Client, override_settings

from tenants.domains import services as domains
from tenants.domains.services import DomainConflict
from tenants.models import Domain
from tests.conftest import TEST_ACTOR
from tests.domains.test_verification import shop

S = Domain.Status
ASK = "/internal/tls/ask"


@pytest.fixture
def asked(plans, domain_settings):
    tenant = shop(plans, "asked")
    Domain.objects.create(tenant=tenant, domain="live.ask.example", kind=Domain.Kind.CUSTOM, status=S.ACTIVE)
    return domain_settings


def admin_client(**extra) -> Client:
    return Client(HTTP_HOST="admin.platform.test", **extra)


@override_settings(EDGE_ASK_SECRET="edge-shared-secret", EDGE_ASK_ALLOWED_IPS=["10.0.0.5/32"],
                   TRUSTED_PROXIES=[])
def test_tls_ask_refuses_anyone_but_the_edge_before_reading_the_name(asked):
    # Loopback is no longer special: the edge relays every visitor from there.
    for client in (admin_client(), admin_client(REMOTE_ADDR="203.0.113.9")):
        for name in ("live.ask.example", "unknown.ask.example", "1.2.3.4"):
            refused = client.get(ASK, {"domain": name})
            assert refused.status_code == 403, name
            assert name not in refused.content.decode() and "EDGE_ASK_SECRET" in refused.content.decode()
    wrong = admin_client(HTTP_X_EDGE_ASK_SECRET="guess").get(ASK, {"domain": "live.ask.example"})
    assert wrong.status_code == 403
    # A wrong secret is refused even from an allowed address.
    assert admin_client(REMOTE_ADDR="10.0.0.5", HTTP_X_EDGE_ASK_SECRET="guess").get(
        ASK, {"domain": "live.ask.example"}).status_code == 403


@override_settings(EDGE_ASK_SECRET="edge-shared-secret", EDGE_ASK_ALLOWED_IPS=["10.0.0.5/32"],
                   TRUSTED_PROXIES=["10.0.1.0/24"])
def test_tls_ask_answers_the_edge_by_secret_or_address(asked):
    by_secret = admin_client(REMOTE_ADDR="203.0.113.9", HTTP_X_EDGE_ASK_SECRET="edge-shared-secret")
    assert by_secret.get(ASK, {"domain": "live.ask.example"}).status_code == 200
    assert by_secret.get(ASK, {"domain": "unknown.ask.example"}).status_code == 404
    by_address = admin_client(REMOTE_ADDR="10.0.0.5")
    assert by_address.get(ASK, {"domain": "live.ask.example"}).status_code == 200
    # A trusted proxy asking for itself may ask; a visitor it relays may not.
    proxy = admin_client(REMOTE_ADDR="10.0.1.7")
    assert proxy.get(ASK, {"domain": "live.ask.example"}).status_code == 200
    relayed = proxy.get(ASK, {"domain": "live.ask.example"}, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert relayed.status_code == 403
    # Spoofing the allowed address from elsewhere does nothing.
    spoof = admin_client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.0.0.5")
    assert spoof.get(ASK, {"domain": "live.ask.example"}).status_code == 403


@override_settings(EDGE_ASK_SECRET="", EDGE_ASK_ALLOWED_IPS=[], TRUSTED_PROXIES=[])
def test_tls_ask_with_nothing_configured_answers_nobody(asked):
    assert admin_client().get(ASK, {"domain": "live.ask.example"}).status_code == 403
    # An empty secret header does not match an empty secret.
    assert admin_client(HTTP_X_EDGE_ASK_SECRET="").get(ASK, {"domain": "live.ask.example"}).status_code == 403


@pytest.mark.parametrize(
    "status", [S.PENDING_VERIFICATION, S.VERIFICATION_FAILED, S.VERIFIED, S.ACTIVE, S.MOVED]
)
def test_domain_add_says_only_already_in_use(plans, domain_settings, status):
    holder = shop(plans, "holder-shop")
    Domain.objects.create(tenant=holder, domain="held.example", kind=Domain.Kind.CUSTOM, status=status)
    asker = shop(plans, "asker-shop")
    with pytest.raises(DomainConflict) as refused:
        domains.domain_add(tenant=asker, domain="HELD.example", actor=TEST_ACTOR)
    message = str(refused.value)
    assert message == (
        "held.example is already in use. If you own this domain, contact support to have it released."
    )
    for leak in ("holder", "Holder", "shop", "verif", "lapse", "claim", str(status)):
        assert leak not in message, leak
    # Nothing was written for the asker.
    assert not Domain.objects.filter(tenant=asker, domain="held.example").exists()
