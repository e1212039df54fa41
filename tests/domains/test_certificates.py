"""ACME issuance against Pebble, HTTP-01 answered by the platform itself (a real gunicorn)."""

import stat
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command
from django.core.management.base import CommandError

from core.crypto import secret_decrypt
from core.models import AuditEvent
from platform_site.devservices import free_port
from tenants.domains import certificates
from tenants.domains import services as domains
from tenants.models import AcmeAccount, AcmeChallenge, Certificate, Domain
from tenants.routing import route_for_host
from tests.conftest import TEST_ACTOR
from tests.domains.test_verification import shop

pytestmark = pytest.mark.django_db(transaction=True)
S = Domain.Status


def decrypted(cert: Certificate) -> certificates.CertificateMaterial:
    """The chain and key as stored, decrypted (the edge reads them the same way)."""
    return certificates.CertificateMaterial(
        secret_decrypt(cert.chain_encrypted), secret_decrypt(cert.key_encrypted)
    )


def verified_domain(plans, dns_server, name: str, subdomain: str = "certshop") -> Domain:
    tenant = shop(plans, subdomain)
    domain = domains.domain_add(tenant=tenant, domain=name, actor=TEST_ACTOR)
    dns_server.set_txt(f"_platform-verify.{name}", domain.verification_token)
    dns_server.add_a(name, "127.0.0.1")
    domains.domain_verify(domain=domain, actor=TEST_ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.CERTIFICATE_PENDING
    return domain


def test_issue_with_http01_answered_by_the_platform(plans, domain_settings, edge_settings, dns_server,
                                                   gunicorn, pebble_for):
    app = gunicorn(workers=2, PLATFORM_BASE_DOMAIN="platform.test")
    pebble = pebble_for(int(app.rsplit(":", 1)[1]))
    domain = verified_domain(plans, dns_server, "tls.cert-test.example")

    cert = certificates.certificate_issue(domain=domain, actor=TEST_ACTOR)
    assert cert.status == Certificate.Status.ISSUED, cert.last_error
    domain.refresh_from_db()
    assert domain.status == S.ACTIVE
    assert route_for_host("tls.cert-test.example").subdomain == "certshop"

    # The chain is Pebble's, for this name, and chains up to Pebble's root.
    material = decrypted(cert)
    chain = x509.load_pem_x509_certificates(material.chain_pem)
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["tls.cert-test.example"]
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    leaf.verify_directly_issued_by(chain[1])
    chain[-1].verify_directly_issued_by(root)
    assert cert.not_after == leaf.not_valid_after_utc

    # Secrets are encrypted at rest: neither PEM appears in the stored columns.
    stored = Certificate.objects.get(pk=cert.pk)
    assert b"PRIVATE KEY" not in stored.key_encrypted.encode() and "BEGIN" not in stored.chain_encrypted
    account = AcmeAccount.objects.get(directory_url=pebble.directory_url)
    assert "PRIVATE KEY" not in account.key_encrypted and account.account_url.startswith("https://")
    # Files for the edge, the key readable only by its owner.
    key_file = edge_settings.EDGE_DIR / "certs" / "tls.cert-test.example.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (edge_settings.EDGE_DIR / "certs" / "tls.cert-test.example.pem").read_bytes() == material.chain_pem
    # Challenge answers are cleaned up; the trail names what happened.
    assert not AcmeChallenge.objects.exists()
    assert AuditEvent.objects.filter(action="certificate.issued", target=domain.domain).exists()
    assert AuditEvent.objects.filter(action="domain.activated", target=domain.domain).exists()

    # Renewal reuses the account and replaces the certificate (a new key).
    old_key = material.key_pem
    renewed = certificates.certificate_issue(domain=domain, actor=TEST_ACTOR)
    assert renewed.status == Certificate.Status.ISSUED
    assert decrypted(renewed).key_pem != old_key
    assert isinstance(
        x509.load_pem_x509_certificates(decrypted(renewed).chain_pem)[0].public_key(),
        ec.EllipticCurvePublicKey)
    assert AcmeAccount.objects.count() == 1
    assert AuditEvent.objects.filter(action="certificate.renewed", target=domain.domain).exists()


def test_challenge_failure_is_recorded_with_the_cas_words(plans, domain_settings, edge_settings, dns_server,
                                                          pebble_for):
    # Nothing listens where Pebble will look for the HTTP-01 answer.
    pebble_for(free_port())
    domain = verified_domain(plans, dns_server, "nochallenge.cert-test.example")
    cert = certificates.certificate_issue(domain=domain, actor=TEST_ACTOR)
    assert cert.status == Certificate.Status.FAILED
    assert cert.last_error.startswith("The CA could not validate the domain: http-01:")
    assert "connection refused" in cert.last_error.lower()
    assert cert.attempts == 1 and cert.next_attempt_at is not None
    domain.refresh_from_db()
    assert domain.status == S.CERTIFICATE_PENDING
    assert domain.status_reason.startswith("Certificate request failed: The CA could not validate")
    assert route_for_host(domain.domain) is None
    assert not AcmeChallenge.objects.exists()
    assert not (edge_settings.EDGE_DIR / "certs" / f"{domain.domain}.pem").exists()
    assert certificates.certificates_due(now=cert.next_attempt_at) == [domain]


def test_unreachable_directory_fails_cleanly(plans, domain_settings, edge_settings, dns_server, settings):
    settings.ACME_DIRECTORY_URL = f"https://127.0.0.1:{free_port()}/dir"
    domain = verified_domain(plans, dns_server, "nodir.cert-test.example")
    cert = certificates.certificate_issue(domain=domain, actor=TEST_ACTOR)
    assert cert.status == Certificate.Status.FAILED
    assert f"ACME directory {settings.ACME_DIRECTORY_URL} is unreachable" in cert.last_error
    domain.refresh_from_db()
    assert domain.status == S.CERTIFICATE_PENDING and "unreachable" in domain.status_reason
    with pytest.raises(CommandError, match="Certificate for nodir.cert-test.example failed: ACME directory"):
        call_command("issue_certificate", "nodir.cert-test.example")


def test_unverified_domains_get_no_certificate(plans, domain_settings, dns_server):
    tenant = shop(plans, "nocert")
    domain = domains.domain_add(tenant=tenant, domain="unverified.cert-test.example", actor=TEST_ACTOR)
    with pytest.raises(CommandError, match="only a verified domain gets a certificate"):
        call_command("issue_certificate", domain.domain)
    with pytest.raises(CommandError, match="No custom domain 'missing.example'"):
        call_command("issue_certificate", "missing.example")
    assert not Certificate.objects.exists()


def test_one_issuance_per_domain_at_a_time(plans, domain_settings, dns_server):
    domain = verified_domain(plans, dns_server, "busy.cert-test.example")
    lock = certificates._lock(domain.domain)
    assert lock.acquire(blocking=False)
    try:
        with pytest.raises(certificates.IssuanceBusy, match="being issued right now"):
            certificates.certificate_issue(domain=domain, actor=TEST_ACTOR)
    finally:
        lock.release()


def test_rate_limit_backs_off_longer_and_says_so(plans, domain_settings, dns_server):
    # Pebble never rate-limits, so the CA's problem document is built here as the acme library
    # parses it from a 429 response; the recording and back-off are what is under test.
    from acme import messages

    domain = verified_domain(plans, dns_server, "limited.cert-test.example")
    cert = Certificate.objects.get(domain=domain)
    error = messages.Error(typ="urn:ietf:params:acme:error:rateLimited",
                           detail="too many certificates already issued for exact set of domains")
    cert = certificates._failed(domain, cert, error, TEST_ACTOR)
    assert cert.last_error == (
        "Rate limited by the CA (too many certificates already issued for exact set of domains); "
        "backing off before retrying."
    )
    assert cert.next_attempt_at - cert.updated_at >= certificates.RATE_LIMIT_RETRY - timedelta(seconds=5)
    assert AuditEvent.objects.get(action="certificate.failed").details["rate_limited"] is True


def test_http_token_on_the_owners_server_proves_ownership(plans, domain_settings, dns_server, gunicorn):
    """No TXT record: the check fetches http://<domain>/.well-known/platform-verify/<token> from
    the server the domain points at. A real HTTP server stands in for the owner's origin."""
    import http.server
    import threading

    tenant = shop(plans, "httptoken")
    domain = domains.domain_add(tenant=tenant, domain="http-token.cert-test.example", actor=TEST_ACTOR)

    asked = []

    class Origin(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's naming
            asked.append(self.path)
            ok = (self.path == f"/.well-known/platform-verify/{domain.verification_token}"
                  and self.headers["Host"] == f"{domain.domain}:{self.server.server_address[1]}")
            body = domain.verification_token.encode() if ok else b"no"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    try:
        domain_settings.CUSTOM_DOMAIN_HTTP_CHECK_PORT = origin.server_address[1]
        dns_server.add_a(domain.domain, "127.0.0.1")
        # Loopback is an internal address: refused (and said so) unless allowed, nothing is sent.
        domain_settings.OUTBOUND_ALLOWED_NETWORKS = []
        refused = domains.domain_verify(domain=domain, actor=TEST_ACTOR)
        assert asked == [] and "refused: 127.0.0.1" in refused.message
        domain_settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
        result = domains.domain_verify(domain=domain, actor=TEST_ACTOR)
    finally:
        origin.shutdown()
        origin.server_close()
    domain.refresh_from_db()
    assert domain.status == S.CERTIFICATE_PENDING, result.message
    assert domain.ownership_verified_at is not None
    assert domain.last_diagnosis["ownership_ok"] and not domain.last_diagnosis["rows"][0]["seen"]

    # A name that already points at the platform cannot be claimed by another shop this way:
    # the platform (a real gunicorn here) never serves ownership tokens.
    app = gunicorn(workers=1, PLATFORM_BASE_DOMAIN="platform.test")
    domain_settings.CUSTOM_DOMAIN_HTTP_CHECK_PORT = int(app.rsplit(":", 1)[1])
    squatter = domains.domain_add(tenant=shop(plans, "httpsquat"), domain="aimed-at-us.cert-test.example",
                                  actor=TEST_ACTOR)
    dns_server.add_a(squatter.domain, "127.0.0.1")
    domains.domain_verify(domain=squatter, actor=TEST_ACTOR)
    squatter.refresh_from_db()
    assert squatter.status == S.VERIFICATION_FAILED and squatter.ownership_verified_at is None
    assert "TXT record _platform-verify.aimed-at-us.cert-test.example is missing" in squatter.status_reason


def test_renewals_are_due_30_days_before_expiry(plans, domain_settings, dns_server):
    from django.utils import timezone

    domain = verified_domain(plans, dns_server, "renew.cert-test.example")
    Domain.objects.filter(pk=domain.pk).update(status=S.ACTIVE)
    cert = Certificate.objects.get(domain=domain)
    now = timezone.now()
    Certificate.objects.filter(pk=cert.pk).update(status=Certificate.Status.ISSUED,
                                                  not_after=now + timedelta(days=31))
    assert certificates.certificates_due(now=now) == []
    assert certificates.certificates_due(now=now + timedelta(days=2)) == [domain]
