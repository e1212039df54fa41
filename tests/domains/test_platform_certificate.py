"""The platform wildcard certificate by ACME DNS-01: real Pebble, pebble-challtestsrv as DNS server."""

from datetime import timedelta

import dns.resolver
import pytest
from cryptography import x509
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from core.models import AuditEvent
from platform_site.devservices import free_port
from tenants.domains import platform_certificate as pc
from tenants.domains.dns_providers import DnsProviderError, dns_provider
from tenants.domains.edge import render_config
from tenants.domains.selectors import platform_certificate_material
from tenants.errors import TenantValidationError
from tenants.models import PlatformCertificate
from tenants.signals import edge_changed
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wildcard_settings(settings, dns_server, pebble_for):
    settings.PLATFORM_BASE_DOMAIN = "shops.platform.test"
    settings.PLATFORM_CERT_DNS_PROVIDER = "challtestsrv"
    settings.PLATFORM_CERT_CHALLTESTSRV_URL = f"http://127.0.0.1:{dns_server.mgmt_port}"
    settings.PLATFORM_CERT_DNS_CHECK_NAMESERVERS = [dns_server.nameserver]
    settings.PLATFORM_CERT_PROPAGATION_SECONDS = 5
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    pebble = pebble_for(free_port())  # DNS-01 only: its HTTP-01 port is never used
    return pebble


def txt_values(dns_server, name: str) -> set[str]:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.dns_port
    try:
        return {b"".join(r.strings).decode() for r in resolver.resolve(name, "TXT")}
    except dns.resolver.NoAnswer:
        return set()


def test_wildcard_issued_by_dns01_renewed_and_a_dns_failure_keeps_the_old_one(wildcard_settings, dns_server,
                                                                              settings, tmp_path):
    pebble = wildcard_settings
    signals = []

    def receiver(sender, **kwargs):
        signals.append(kwargs)

    edge_changed.connect(receiver)
    try:
        assert platform_certificate_material() is None
        assert pc.platform_certificate_due()
        call_command("issue_platform_certificate")
    finally:
        edge_changed.disconnect(receiver)
    cert = PlatformCertificate.objects.get()
    assert cert.status == PlatformCertificate.Status.ISSUED and cert.last_error == ""
    assert not pc.platform_certificate_due()  # 30-day renewal window not reached (Pebble: 5 years)
    material = platform_certificate_material()
    assert material is not None
    chain = x509.load_pem_x509_certificates(material.chain_pem)
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["*.shops.platform.test", "shops.platform.test"]
    # The chain validates up to Pebble's root, and the key is the leaf's.
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    chain[0].verify_directly_issued_by(chain[1])
    chain[-1].verify_directly_issued_by(root)
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(material.key_pem, None)
    assert key.public_key().public_numbers() == chain[0].public_key().public_numbers()
    # Encrypted at rest; the challenge records are gone again; audited; the edge was told.
    assert "BEGIN" not in cert.chain_encrypted and "PRIVATE" not in cert.key_encrypted
    assert txt_values(dns_server, "_acme-challenge.shops.platform.test") == set()
    assert AuditEvent.objects.filter(action="platform_certificate.issued", target="*.shops.platform.test",
                                     actor_type="command",
                                     actor__startswith="issue_platform_certificate").exists()
    assert [(s["reason"], s["signal"]) for s in signals] == [("platform certificate", edge_changed)]
    # The local edge serves the issued wildcard (over EDGE_PLATFORM_CERT), kept out of its certs/ sweep.
    settings.EDGE_DIR = tmp_path / "edge"
    settings.EDGE_PLATFORM_CERT = settings.EDGE_PLATFORM_KEY = ""
    config = render_config([])
    wildcard = tmp_path / "edge" / "platform" / "wildcard.pem"
    assert f"ssl_certificate {wildcard};" in config and wildcard.read_bytes() == material.chain_pem
    assert (tmp_path / "edge" / "platform" / "wildcard.key").stat().st_mode & 0o777 == 0o600

    # Renewal: a new key and serial, audited as a renewal.
    renewed = pc.platform_certificate_issue(actor=TEST_ACTOR)
    assert renewed.status == PlatformCertificate.Status.ISSUED and renewed.serial != cert.serial
    assert platform_certificate_material().key_pem != material.key_pem
    assert AuditEvent.objects.filter(action="platform_certificate.renewed").count() == 1

    # The DNS provider fails (its API is down): a clear error, the working certificate stays.
    working = platform_certificate_material()
    settings.PLATFORM_CERT_CHALLTESTSRV_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match=r"pebble-challtestsrv at http://127\.0\.0\.1:\d+ did not take the "
                                           r"set-txt request.*stays in place"):
        call_command("issue_platform_certificate")
    failed = PlatformCertificate.objects.get()
    assert failed.status == PlatformCertificate.Status.ISSUED and failed.serial == renewed.serial
    assert failed.attempts == 1 and failed.next_attempt_at > timezone.now()
    assert platform_certificate_material() == working
    assert AuditEvent.objects.filter(action="platform_certificate.failed").count() == 1
    # Due again once the back-off has passed, not before.
    assert not pc.platform_certificate_due()
    assert pc.platform_certificate_due(now=timezone.now() + timedelta(minutes=6))


def test_txt_record_the_ca_cannot_see_fails_with_the_cas_words(wildcard_settings, settings, tmp_path):
    """The provider writes to a DNS server the CA does not ask: the CA's refusal is recorded."""
    from tests.domains.components import ChallTestSrv

    elsewhere = ChallTestSrv(tmp_path)
    try:
        settings.PLATFORM_CERT_CHALLTESTSRV_URL = f"http://127.0.0.1:{elsewhere.mgmt_port}"
        settings.PLATFORM_CERT_DNS_CHECK_NAMESERVERS = []  # nothing checks before the CA is asked
        cert = pc.platform_certificate_issue(actor=TEST_ACTOR)
    finally:
        elsewhere.stop()
    assert cert.status == PlatformCertificate.Status.FAILED
    assert cert.last_error.startswith("The CA could not validate the domain: dns-01:"), cert.last_error
    assert platform_certificate_material() is None


def test_propagation_check_names_the_nameserver(wildcard_settings, dns_server, settings, tmp_path):
    from tests.domains.components import ChallTestSrv

    elsewhere = ChallTestSrv(tmp_path)
    try:
        settings.PLATFORM_CERT_CHALLTESTSRV_URL = f"http://127.0.0.1:{elsewhere.mgmt_port}"
        settings.PLATFORM_CERT_PROPAGATION_SECONDS = 1
        cert = pc.platform_certificate_issue(actor=TEST_ACTOR)
    finally:
        elsewhere.stop()
    assert cert.status == PlatformCertificate.Status.FAILED
    assert f"did not show on nameserver {dns_server.nameserver} within 1 s" in cert.last_error


def test_bad_settings_are_refused_before_anything_happens(settings, dns_server):
    settings.PLATFORM_BASE_DOMAIN = "localhost"
    settings.PLATFORM_CERT_DNS_PROVIDER = "challtestsrv"
    with pytest.raises(TenantValidationError, match="needs a real domain"):
        pc.platform_certificate_issue(actor=TEST_ACTOR)
    settings.PLATFORM_BASE_DOMAIN = "shops.platform.test"
    settings.PLATFORM_CERT_DNS_PROVIDER = ""
    with pytest.raises(DnsProviderError, match="set PLATFORM_CERT_DNS_PROVIDER"):
        pc.platform_certificate_issue(actor=TEST_ACTOR)
    assert not pc.platform_certificate_due()
    settings.PLATFORM_CERT_DNS_PROVIDER = "no.such.Provider"
    with pytest.raises(DnsProviderError, match="neither route53, challtestsrv nor an importable class"):
        dns_provider()
    settings.PLATFORM_CERT_DNS_PROVIDER = "tenants.models.Plan"
    with pytest.raises(DnsProviderError, match="lacks set_txt, clear_txt, wait"):
        dns_provider()
    settings.PLATFORM_CERT_DNS_PROVIDER = "route53"
    settings.PLATFORM_CERT_ROUTE53_ZONE_ID = ""
    with pytest.raises(DnsProviderError, match="PLATFORM_CERT_ROUTE53_ZONE_ID is empty"):
        dns_provider()
    assert not PlatformCertificate.objects.exists()


def test_staff_see_status_expiry_and_error_never_the_key_and_operators_queue_issuance(settings,
                                                                                     domain_settings):
    import django_rq

    from core.crypto import secret_encrypt
    from core.roles import OPERATORS, SUPPORT
    from tests.staff import admin_client, staff_user

    settings.PLATFORM_BASE_DOMAIN = "shops.platform.test"
    cert = PlatformCertificate.objects.create(
        base_domain="shops.platform.test", names=["shops.platform.test", "*.shops.platform.test"],
        status=PlatformCertificate.Status.ISSUED, serial="abc123",
        not_after=timezone.now() + timedelta(days=40), chain_encrypted=secret_encrypt(b"-----BEGIN CERT"),
        key_encrypted=secret_encrypt(b"-----BEGIN PRIVATE KEY-----secret"),
        last_error="DNS provider (route53): Route 53 refused the TXT record",
    )
    url = f"/admin/tenants/platformcertificate/{cert.pk}/change/"
    support, operator = admin_client(staff_user("sup", SUPPORT)), admin_client(staff_user("op", OPERATORS))
    for client in (support, operator):
        page = client.get(url).content.decode()
        assert "abc123" in page and "Route 53 refused the TXT record" in page and "Issued" in page
        assert "PRIVATE KEY" not in page
        assert cert.key_encrypted not in page and cert.chain_encrypted not in page
        assert "shops.platform.test, *.shops.platform.test" in page and "[&quot;" not in page
    listing = "/admin/tenants/platformcertificate/"
    assert "*.shops.platform.test" in support.get(listing).content.decode()
    queue = django_rq.get_queue("default")
    queue.empty()
    form = {"action": "issue_now", "_selected_action": [cert.pk]}
    support.post(listing, form)  # not theirs: nothing queued
    assert not [j for j in queue.get_jobs() if j.func_name.endswith("issue_platform_certificate_job")]
    operator.post(listing, form)
    jobs = [j for j in queue.get_jobs() if j.func_name.endswith("issue_platform_certificate_job")]
    assert [j.args for j in jobs] == [("staff", "op")]


def test_the_wildcard_expiry_is_a_certificate_fact_for_the_alert_rule():
    from tenants.selectors import certificate_facts

    expires = timezone.now() + timedelta(days=3)
    cert = PlatformCertificate.objects.create(base_domain="shops.platform.test", status="issued",
                                              not_after=expires)
    PlatformCertificate.objects.create(base_domain="never.platform.test", status="failed")  # nothing issued
    facts = [f for f in certificate_facts() if f.tenant_id is None]
    assert [(f.host, f.expires_at) for f in facts] == [("*.shops.platform.test", expires)]
    assert facts[0].link.endswith(f"/tenants/platformcertificate/{cert.pk}/change/")


def test_the_hourly_renewal_run_queues_the_wildcard_when_due(settings):
    import django_rq

    from tenants.domains.jobs import certificates_due_job

    settings.PLATFORM_BASE_DOMAIN = "shops.platform.test"
    settings.PLATFORM_CERT_DNS_PROVIDER = "challtestsrv"
    queue = django_rq.get_queue("default")

    def queued() -> int:
        return len([j for j in queue.get_jobs() if j.func_name.endswith("issue_platform_certificate_job")])

    cert = PlatformCertificate.objects.create(base_domain="shops.platform.test", status="issued",
                                              not_after=timezone.now() + timedelta(days=60))
    queue.empty()
    certificates_due_job()
    assert queued() == 0  # 60 days left: not yet
    cert.not_after = timezone.now() + timedelta(days=20)
    cert.save()
    certificates_due_job()
    assert queued() == 1
    settings.PLATFORM_CERT_DNS_PROVIDER = ""  # no provider configured: never queued
    queue.empty()
    certificates_due_job()
    assert queued() == 0


def test_one_issuance_at_a_time(settings):
    import django_rq

    from tenants.domains.certificates import IssuanceBusy

    settings.PLATFORM_BASE_DOMAIN = "shops.platform.test"
    settings.PLATFORM_CERT_DNS_PROVIDER = "challtestsrv"
    held = django_rq.get_connection("default").lock("platform:acme-issue:*.shops.platform.test", timeout=30)
    assert held.acquire(blocking=False)
    try:
        with pytest.raises(IssuanceBusy, match=r"\*\.shops\.platform\.test is being issued right now"):
            pc.platform_certificate_issue(actor=TEST_ACTOR)
    finally:
        held.release()
    assert not PlatformCertificate.objects.exists()


class RecordingProvider:
    """A provider of one's own, plugged in by dotted path: it writes through pebble-challtestsrv and
    records what it was asked."""

    calls: list[tuple[str, str]] = []

    def __init__(self):
        from tenants.domains.dns_providers import ChallTestSrvProvider

        self.inner = ChallTestSrvProvider()

    def set_txt(self, name, value):
        self.calls.append(("set", name))
        self.inner.set_txt(name, value)

    def clear_txt(self, name, value):
        self.calls.append(("clear", name))
        self.inner.clear_txt(name, value)

    def wait(self, timeout):
        self.calls.append(("wait", str(timeout)))


def test_a_provider_of_ones_own_by_dotted_path(wildcard_settings, settings):
    settings.PLATFORM_CERT_DNS_PROVIDER = f"{__name__}.RecordingProvider"
    RecordingProvider.calls = []
    cert = pc.platform_certificate_issue(actor=TEST_ACTOR)
    assert cert.status == PlatformCertificate.Status.ISSUED, cert.last_error
    name = "_acme-challenge.shops.platform.test"
    # Two values at one name (wildcard and base), one wait, both removed after.
    assert RecordingProvider.calls == [("set", name), ("set", name), ("wait", "5"), ("clear", name),
                                       ("clear", name)]
