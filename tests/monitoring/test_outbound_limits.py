"""Probes and alert deliveries go through core.outbound: internal addresses refused (and only
"refused: <reason>" shows, in the page and in /metrics), one total deadline, no redirects."""

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from core.audit import Actor
from monitoring.jobs import probe_shops_job
from monitoring.models import Delivery, ProbeResult
from monitoring.probes import probe_url
from monitoring.services import alerts, channels
from tenants.models import Domain
from tests.monitoring.servers import LocalCA, ShopServer
from tests.platform.test_outbound import Server

ACTOR = Actor.command("pytest")
FAST = {"ALERT_DELIVERY_ATTEMPTS": 1, "PLATFORM_ADMIN_URL": "https://admin.example.test"}


@pytest.fixture
def servers():
    made: list = []

    def make(cls=ShopServer, **kwargs):
        made.append(cls(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.mark.django_db(transaction=True)
def test_a_probe_of_an_internal_address_is_refused_and_leaks_nothing(make_tenant, servers, client, settings,
                                                                      tmp_path):
    alpha = make_tenant("alpha")
    Domain.objects.create(tenant=alpha, domain="shop.alpha.test", kind="custom", status="active",
                          is_primary=False)
    ca = LocalCA(tmp_path)
    internal = servers(tls=ca.issue("shop.alpha.test", days=3)[:2])  # an "internal" service with a cert
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    connect = {"alpha.localhost": "169.254.169.254:443", "shop.alpha.test": internal.address}
    with override_settings(PROBE_CONNECT_TO=connect, PROBE_SCHEME="https", PROBE_PORT="",
                           PROBE_CA_FILE=str(ca.ca_file), PROBE_TIMEOUT_SECONDS=1):
        assert probe_shops_job() == 2
    results = {r.host: r for r in ProbeResult.objects.all()}
    assert results["alpha.localhost"].error == (
        "refused: 169.254.169.254 (alpha.localhost) is a cloud metadata (link-local) address; "
        "allow it with OUTBOUND_ALLOWED_NETWORKS")
    custom = results["shop.alpha.test"]
    assert custom.error == (
        "refused: 127.0.0.1 (shop.alpha.test) is a loopback address; allow it with OUTBOUND_ALLOWED_NETWORKS")
    assert internal.hosts == []  # nothing was sent
    seen = (custom.ok, custom.status_code, custom.latency_ms, custom.tls_expires_at)
    assert seen == (False, None, None, None)

    scraped = client.get("/metrics", HTTP_HOST="localhost").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    up = {s.labels["host"]: s.value for s in families["platform_probe_up"].samples}
    assert up == {"alpha.localhost": 0, "shop.alpha.test": 0}
    for family in ("platform_probe_latency_seconds", "platform_certificate_days_left"):
        hosts = {s.labels.get("host") for s in families[family].samples} if family in families else set()
        assert not hosts & {"alpha.localhost", "shop.alpha.test"}, family
    assert "127.0.0.1" not in "".join(line for line in scraped.splitlines() if not line.startswith("#"))


def test_a_probe_of_a_trickling_server_hits_the_total_deadline(servers):
    trickle = servers(Server)
    outcome = probe_url("http://trickle.localhost/trickle-body", connect_to=f"127.0.0.1:{trickle.port}",
                        timeout=0.4)
    assert not outcome.ok and outcome.error == "timed out after 0.4 s"
    big = probe_url("http://big.localhost/big", connect_to=f"127.0.0.1:{trickle.port}", timeout=5)
    assert big.ok and big.status_code == 200  # read up to the cap, then the connection is dropped


@pytest.mark.django_db(transaction=True)
def test_deliveries_to_internal_addresses_are_refused(settings, servers, receiver):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    hook = receiver()
    with override_settings(**FAST):
        channel = channels.channel_create(name="meta", kind="webhook", target="http://169.254.169.254/hook",
                                          secret="whsec-0123456789abcdef", actor=ACTOR)
        delivery = alerts.alert_test_send(channel=channel, actor=ACTOR)
        assert delivery.status == Delivery.Status.FAILED
        assert delivery.last_error == (
            "cannot reach 169.254.169.254: refused: 169.254.169.254 is a cloud metadata (link-local) "
            "address; allow it with OUTBOUND_ALLOWED_NETWORKS")
        local = channels.channel_create(name="local", kind="webhook", target=f"{hook.url}/hook",
                                        secret="whsec-0123456789abcdef", actor=ACTOR)
        refused = alerts.alert_test_send(channel=local, actor=ACTOR)
        assert "refused: 127.0.0.1 is a loopback" in refused.last_error
        assert hook.requests == []


@pytest.mark.django_db(transaction=True)
def test_deliveries_do_not_follow_redirects(servers, receiver):
    target = receiver()
    redirecting = servers(Server)
    redirecting.redirect_to = f"{target.url}/elsewhere"
    with override_settings(**FAST):
        channel = channels.channel_create(
            name="moved", kind="slack", secret=f"http://127.0.0.1:{redirecting.port}/redirect", actor=ACTOR
        )
        delivery = alerts.alert_test_send(channel=channel, actor=ACTOR)
    assert delivery.status == Delivery.Status.FAILED and delivery.response_code == 302
    assert delivery.last_error == f"HTTP 302 from 127.0.0.1:{redirecting.port} (redirects are not followed)"
    assert target.requests == []
