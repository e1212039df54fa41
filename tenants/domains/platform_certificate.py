"""The platform wildcard certificate: ``*.<PLATFORM_BASE_DOMAIN>`` and the base, by ACME DNS-01.

The TXT answers are set through the DNS provider (dns_providers.py), checked on the zone's
nameservers when configured, answered, and cleared again whatever happens. A failure keeps the
certificate that still works (only the status text and the retry time change) and is audited with
the CA's or the provider's own words. Renewal rides on certificates_due_job, like custom domains.
"""

import logging
from datetime import datetime, timedelta

import django_rq
from acme import challenges, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.audit import Action, Actor, audit_record
from core.crypto import secret_encrypt
from core.db import connection
from tenants.domains.acme_client import acme_account_forget, acme_client
from tenants.domains.certificates import RATE_LIMIT_RETRY, RETRY, IssuanceBusy, _error_text
from tenants.domains.dns_providers import DnsProvider, DnsProviderError, dns_provider, txt_visible
from tenants.errors import TenantValidationError
from tenants.models import PlatformCertificate
from tenants.signals import edge_changed

logger = logging.getLogger(__name__)


def platform_names() -> tuple[str, list[str]]:
    base = settings.PLATFORM_BASE_DOMAIN.strip().lower().rstrip(".")
    if "." not in base:
        raise TenantValidationError(
            f"PLATFORM_BASE_DOMAIN is {base!r}; a wildcard certificate needs a real domain such as "
            "shops.example.com (a CA will not issue *.localhost)."
        )
    return base, [base, f"*.{base}"]


def platform_certificate_issue(*, actor: Actor) -> PlatformCertificate:
    """Issue or renew the wildcard certificate now. Returns the row (check status and last_error)."""
    connection.set_schema_to_public()
    base, names = platform_names()
    provider = dns_provider()  # a missing or broken provider setting raises before anything changes
    # Held across the propagation wait too, so it outlives it (an expired lock fails its release).
    lock = django_rq.get_connection("default").lock(
        f"platform:acme-issue:*.{base}",
        timeout=settings.ACME_TIMEOUT_SECONDS + settings.PLATFORM_CERT_PROPAGATION_SECONDS * 2 + 120,
    )
    if not lock.acquire(blocking=False):
        raise IssuanceBusy(f"The certificate for *.{base} is being issued right now; wait for it.")
    try:
        cert, _ = PlatformCertificate.objects.get_or_create(base_domain=base, defaults={"names": names})
        try:
            chain_pem, key_pem = _order(names, provider)
        except Exception as exc:
            return _failed(cert, exc, actor)
        return _issued(cert, names, chain_pem, key_pem, actor)
    finally:
        lock.release()


def _order(names: list[str], provider: DnsProvider) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    csr_pem = crypto_util.make_csr(key_pem, names)
    try:
        acme = acme_client()
        order = acme.new_order(csr_pem)
    except messages.Error as exc:
        if exc.code != "accountDoesNotExist":
            raise
        acme_account_forget()  # the CA forgot our account (a reset test CA): register again, once
        acme = acme_client()
        order = acme.new_order(csr_pem)
    answers = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue
        dns01 = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)), None)
        if dns01 is None:
            raise errors.Error(f"The CA offered no DNS-01 challenge for {authz.body.identifier.value}.")
        response, validation = dns01.response_and_validation(acme.net.key)
        answers.append((dns01, response, dns01.chall.validation_domain_name(authz.body.identifier.value),
                        validation))
    made: list[tuple[str, str]] = []
    try:
        for _, _, record, value in answers:
            provider.set_txt(record, value)
            made.append((record, value))
        timeout = settings.PLATFORM_CERT_PROPAGATION_SECONDS
        provider.wait(timeout)
        for record in sorted({r for r, _ in made}):
            txt_visible(record, [v for r, v in made if r == record], timeout)
        for dns01, response, _, _ in answers:
            acme.answer_challenge(dns01, response)
        deadline = datetime.now() + timedelta(seconds=settings.ACME_TIMEOUT_SECONDS)
        order = acme.poll_and_finalize(order, deadline=deadline)
    finally:
        for record, value in made:
            try:
                provider.clear_txt(record, value)
            except DnsProviderError as exc:
                # A stale challenge record is harmless; the next order sets its own value.
                logger.warning("could not remove the challenge record %s: %s", record, exc)
    return order.fullchain_pem.encode(), key_pem


def _issued(cert: PlatformCertificate, names: list[str], chain_pem: bytes, key_pem: bytes,
            actor: Actor) -> PlatformCertificate:
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    serial = format(leaf.serial_number, "x")
    renewal = cert.status == PlatformCertificate.Status.ISSUED or bool(cert.chain_encrypted)
    with transaction.atomic():
        cert.names, cert.status, cert.serial = names, PlatformCertificate.Status.ISSUED, serial
        cert.chain_encrypted, cert.key_encrypted = secret_encrypt(chain_pem), secret_encrypt(key_pem)
        cert.not_before, cert.not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        cert.issued_at, cert.last_error, cert.attempts, cert.next_attempt_at = timezone.now(), "", 0, None
        cert.save()
        action = Action.PLATFORM_CERTIFICATE_RENEWED if renewal else Action.PLATFORM_CERTIFICATE_ISSUED
        audit_record(actor=actor, action=action, target=str(cert),
                     details={"serial": serial, "names": names, "not_after": cert.not_after.isoformat(),
                              "directory": settings.ACME_DIRECTORY_URL})
    edge_changed.send(sender=None, actor=actor, reason="platform certificate")
    return cert


def _failed(cert: PlatformCertificate, exc: Exception, actor: Actor) -> PlatformCertificate:
    if isinstance(exc, DnsProviderError):
        text, limited = f"DNS provider ({settings.PLATFORM_CERT_DNS_PROVIDER}): {exc}", False
    else:
        text, limited = _error_text(exc)
    logger.warning("platform certificate for %s failed: %s", cert, text)
    cert.attempts += 1
    delay = RATE_LIMIT_RETRY if limited else RETRY[min(cert.attempts - 1, len(RETRY) - 1)]
    cert.next_attempt_at = timezone.now() + delay
    if cert.status != PlatformCertificate.Status.ISSUED:
        cert.status = PlatformCertificate.Status.FAILED  # a failed renewal keeps the one that works
    cert.last_error = text[:4000]
    cert.save(update_fields=["status", "attempts", "next_attempt_at", "last_error", "updated_at"])
    audit_record(actor=actor, action=Action.PLATFORM_CERTIFICATE_FAILED, target=str(cert),
                 details={"error": text[:1000], "rate_limited": limited, "attempt": cert.attempts})
    return cert


def platform_certificate_due(*, now: datetime | None = None) -> bool:
    """Whether the wildcard needs issuing, renewing (ACME_RENEW_DAYS before expiry) or a retry."""
    if not settings.PLATFORM_CERT_DNS_PROVIDER:
        return False
    now = now or timezone.now()
    try:
        base, _ = platform_names()
    except TenantValidationError:
        return False
    cert = PlatformCertificate.objects.filter(base_domain=base).first()
    if cert is None:
        return True
    if cert.next_attempt_at is not None:
        return cert.next_attempt_at <= now
    if cert.status != PlatformCertificate.Status.ISSUED or cert.not_after is None:
        return True
    return cert.not_after <= now + timedelta(days=settings.ACME_RENEW_DAYS)
