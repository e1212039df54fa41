from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.jobs import probe_shops_job
from monitoring.models import ProbeHourly, ProbeResult, ProbeState
from monitoring.probes import probe_url
from monitoring.selectors import probe_targets, recent_failures, uptime_windows
from monitoring.services.probing import probe_prune
from tenants.models import Domain, Tenant
from tests.monitoring.probe_data import record
from tests.monitoring.servers import LocalCA, ShopServer, closed_address


@pytest.fixture
def servers():
    made: list[ShopServer] = []

    def make(**kwargs) -> ShopServer:
        made.append(ShopServer(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def ca(tmp_path):
    return LocalCA(tmp_path)


def test_probe_reads_certificate_expiry_from_the_handshake(servers, ca):
    cert, key, expires = ca.issue("soon.localhost", days=5)
    shop = servers(tls=(cert, key))
    outcome = probe_url("https://soon.localhost/", connect_to=shop.address, ca_file=str(ca.ca_file))
    assert outcome.ok and outcome.status_code == 200, outcome
    assert outcome.tls_expires_at == expires
    assert shop.hosts == ["soon.localhost"]

    # A certificate for another name fails verification, and its expiry is still reported.
    wrong = probe_url("https://other.localhost/", connect_to=shop.address, ca_file=str(ca.ca_file))
    assert not wrong.ok
    assert "TLS certificate not valid" in wrong.error and "other.localhost" in wrong.error
    assert wrong.tls_expires_at == expires


def test_probe_reports_down_slow_and_failing_hosts(servers):
    down = probe_url("http://down.localhost/", connect_to=closed_address(), timeout=1)
    assert not down.ok and "ConnectionRefusedError" in down.error
    slow = probe_url("http://slow.localhost/", connect_to=servers(delay=2).address, timeout=0.3)
    assert not slow.ok and slow.error == "timed out after 0.3 s"
    bad = probe_url("http://a.localhost/", connect_to="127.0.0.1")
    assert bad.error == "PROBE_CONNECT_TO entry '127.0.0.1' is not host:port"
    failing = probe_url("http://broken.localhost/", connect_to=servers(status=503).address)
    assert not failing.ok and failing.status_code == 503 and failing.error == "HTTP 503"
    assert failing.latency_ms is not None


@pytest.mark.django_db(transaction=True)
def test_probe_shops_job_covers_active_shops_and_custom_domains(make_tenant, servers, ca, client):
    alpha, _, _ = make_tenant("alpha"), make_tenant("beta"), make_tenant("gamma")
    Domain.objects.create(
        tenant=alpha, domain="shop.alpha.test", kind="custom", status="active", is_primary=False
    )
    Domain.objects.create(tenant=alpha, domain="pending.alpha.test", kind="custom", is_primary=False)
    make_tenant("delta").set_status(Tenant.Status.SUSPENDED, "unpaid")
    alpha_cert = ca.issue("alpha.localhost", days=60)
    custom_cert = ca.issue("shop.alpha.test", days=5)
    gamma_cert = ca.issue("gamma.localhost", days=60)
    connect = {
        "alpha.localhost": servers(tls=alpha_cert[:2]).address,
        "shop.alpha.test": servers(tls=custom_cert[:2]).address,
        "beta.localhost": closed_address(),
        "gamma.localhost": servers(tls=gamma_cert[:2], delay=2).address,
    }
    hosts = sorted(t.host for t in probe_targets())
    assert hosts == ["alpha.localhost", "beta.localhost", "gamma.localhost", "shop.alpha.test"]

    with override_settings(PROBE_CONNECT_TO=connect, PROBE_TIMEOUT_SECONDS=0.5, PROBE_CA_FILE=str(ca.ca_file),
                           PROBE_SCHEME="https", PROBE_PORT=""):
        assert probe_shops_job() == 4
    results = {r.host: r for r in ProbeResult.objects.all()}
    assert set(results) == set(hosts)
    assert results["alpha.localhost"].ok and results["alpha.localhost"].url == "https://alpha.localhost/"
    assert results["shop.alpha.test"].ok
    assert results["shop.alpha.test"].tls_expires_at == custom_cert[2]
    assert not results["beta.localhost"].ok and "ConnectionRefused" in results["beta.localhost"].error
    assert results["gamma.localhost"].error == "timed out after 0.5 s"

    scraped = client.get("/metrics", HTTP_HOST="localhost").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    up = {s.labels["host"]: s.value for s in families["platform_probe_up"].samples}
    assert up == {"alpha.localhost": 1, "shop.alpha.test": 1, "beta.localhost": 0, "gamma.localhost": 0}
    days = {s.labels["host"]: s.value for s in families["platform_certificate_days_left"].samples}
    assert 4.9 < days["shop.alpha.test"] <= 5 and 59.9 < days["alpha.localhost"] <= 60


@pytest.mark.django_db(transaction=True)
def test_probe_shops_for_one_tenant_and_bad_input(make_tenant, servers, capsys):
    make_tenant("alpha")
    make_tenant("beta")
    with override_settings(PROBE_CONNECT_TO={"*": servers().address}):
        call_command("probe_shops", "--tenant", "alpha")
    assert capsys.readouterr().out.strip() == "probed 1 host(s): 1 up, 0 down"
    assert list(ProbeResult.objects.values_list("host", flat=True)) == ["alpha.localhost"]
    with pytest.raises(CommandError, match="No tenant with subdomain 'nope'"):
        call_command("probe_shops", "--tenant", "nope")
    Tenant.objects.filter(subdomain="beta").update(status=Tenant.Status.SUSPENDED)
    with pytest.raises(CommandError, match="'beta' is suspended; only active shops are probed"):
        call_command("probe_shops", "--tenant", "beta")


@pytest.mark.django_db(transaction=True)
def test_uptime_windows_streaks_and_retention(make_tenant):
    alpha = make_tenant("alpha")
    now = timezone.now().replace(minute=30)
    history = [(timedelta(days=40), True)]  # outside the 30-day window and every retention
    history += [(timedelta(days=d), False) for d in (6, 5, 4, 3)]  # older: all down
    history += [(timedelta(minutes=m), m != 20) for m in (25, 20, 15, 10, 5, 0)]  # this hour: 5 up, 1 down
    for age, ok in history:
        record(alpha, "alpha.localhost", ok=ok, at=now - age)
    windows = uptime_windows(now=now)[str(alpha.pk)]
    assert windows["24h"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert windows["30d"] == pytest.approx(100 * 5 / 10, abs=0.01)
    state = ProbeState.objects.get()
    assert (state.ok, state.failures, state.changed_at) == (True, 0, now - timedelta(minutes=15))
    record(alpha, "alpha.localhost", ok=False, at=now + timedelta(minutes=1))
    record(alpha, "alpha.localhost", ok=False, at=now + timedelta(minutes=2), error="timed out after 5 s")
    assert recent_failures(at_least=2) == {"alpha.localhost": (str(alpha.pk), 2, "timed out after 5 s")}
    assert recent_failures(at_least=3) == {}
    with override_settings(PROBE_RETENTION_DAYS=7, PROBE_HOURLY_RETENTION_DAYS=35):
        assert probe_prune(now=now) == 1
        assert ProbeResult.objects.count() == 12
        assert ProbeHourly.objects.filter(hour__lt=now - timedelta(days=35)).count() == 0
    with override_settings(PROBE_RETENTION_DAYS=2):
        assert probe_prune(now=now) == 4  # raw rows go; the hourly counts keep the 30-day uptime
    assert uptime_windows(now=now)[str(alpha.pk)]["30d"] == pytest.approx(100 * 5 / 12, abs=0.01)
