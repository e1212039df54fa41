"""Certificates for custom domains: ACME issuance and renewal with HTTP-01 answered by the platform.

The HTTP-01 answers live in the database (AcmeChallenge) and are served by tenants.domains.wellknown for
any host the edge forwards, so every app server can answer, whichever one the CA reaches.
One issuance per domain at a time (a Redis lock); failures are recorded with the CA's own words
and retried on a backoff, longer when the CA says we hit a rate limit.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import django_rq
import requests
from acme import challenges, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.lock import Lock

from core.audit import Action, Actor, audit_record
from core.crypto import secret_encrypt
from core.db import connection
from tenants.domains import edge
from tenants.domains.acme_client import acme_account_forget, acme_client
from tenants.errors import TenantStateError
from tenants.models import AcmeChallenge, Certificate, Domain
from tenants.routing import routes_forget

logger = logging.getLogger(__name__)

S = Domain.Status
ISSUABLE = (S.VERIFIED, S.CERTIFICATE_PENDING, S.ACTIVE)
RETRY = (timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
RATE_LIMIT_RETRY = timedelta(hours=3)


class IssuanceBusy(TenantStateError):
    pass


@dataclass(frozen=True)
class CertificateMaterial:
    chain_pem: bytes
    key_pem: bytes


def _lock(name: str) -> Lock:
    return django_rq.get_connection("default").lock(
        f"platform:acme-issue:{name}", timeout=settings.ACME_TIMEOUT_SECONDS + 60
    )


def certificate_issue(*, domain: Domain, actor: Actor) -> Certificate:
    """Get (or renew) the certificate of a verified domain; on success the domain goes active."""
    connection.set_schema_to_public()
    domain.refresh_from_db()
    if domain.kind != Domain.Kind.CUSTOM or domain.status not in ISSUABLE:
        raise TenantStateError(
            f"{domain.domain} is {domain.get_status_display().lower()}; only a verified domain "
            "gets a certificate (verify it first)."
        )
    lock = _lock(domain.domain)
    if not lock.acquire(blocking=False):
        raise IssuanceBusy(f"A certificate for {domain.domain} is being issued right now; wait for it.")
    try:
        cert, _ = Certificate.objects.get_or_create(domain=domain)
        try:
            material, not_before, not_after, serial = _order(domain.domain)
        except Exception as exc:
            return _failed(domain, cert, exc, actor)
        return _issued(domain, cert, material, not_before, not_after, serial, actor)
    finally:
        AcmeChallenge.objects.filter(domain=domain.domain).delete()
        lock.release()


def _order(name: str) -> tuple[CertificateMaterial, datetime, datetime, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    csr_pem = crypto_util.make_csr(key_pem, [name])
    try:
        acme = acme_client()
        order = acme.new_order(csr_pem)
    except messages.Error as exc:
        if exc.code != "accountDoesNotExist":
            raise
        # The CA forgot our account (a reset test CA): register again, once.
        acme_account_forget()
        acme = acme_client()
        order = acme.new_order(csr_pem)
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue
        http01 = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
        if http01 is None:
            raise errors.Error(f"The CA offered no HTTP-01 challenge for {name}.")
        response, validation = http01.response_and_validation(acme.net.key)
        AcmeChallenge.objects.update_or_create(
            token=http01.chall.encode("token"), defaults={"domain": name, "key_authorization": validation}
        )
        acme.answer_challenge(http01, response)
    deadline = datetime.now() + timedelta(seconds=settings.ACME_TIMEOUT_SECONDS)
    order = acme.poll_and_finalize(order, deadline=deadline)
    chain_pem = order.fullchain_pem.encode()
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    return (CertificateMaterial(chain_pem, key_pem), leaf.not_valid_before_utc, leaf.not_valid_after_utc,
            format(leaf.serial_number, "x"))


def _issued(domain: Domain, cert: Certificate, material: CertificateMaterial, not_before: datetime,
            not_after: datetime, serial: str, actor: Actor) -> Certificate:
    now = timezone.now()
    renewal = cert.status == Certificate.Status.ISSUED
    with transaction.atomic():
        cert.status = Certificate.Status.ISSUED
        cert.chain_encrypted = secret_encrypt(material.chain_pem)
        cert.key_encrypted = secret_encrypt(material.key_pem)
        cert.not_before, cert.not_after, cert.serial = not_before, not_after, serial
        cert.issued_at, cert.last_error, cert.attempts, cert.next_attempt_at = now, "", 0, None
        cert.save()
        audit_record(actor=actor, action=Action.CERTIFICATE_RENEWED if renewal else Action.CERTIFICATE_ISSUED,
                     tenant=domain.tenant, target=domain.domain,
                     details={"serial": serial, "not_after": not_after.isoformat(),
                              "directory": settings.ACME_DIRECTORY_URL})
    # Files first, so the edge has them by the time the domain routes.
    edge.certificate_files_write(domain.domain, material.chain_pem, material.key_pem)
    if domain.status in (S.VERIFIED, S.CERTIFICATE_PENDING):
        Domain.objects.filter(pk=domain.pk).update(status=S.ACTIVE, status_reason="", updated_at=now)
        domain.status = S.ACTIVE
        audit_record(actor=actor, action=Action.DOMAIN_ACTIVATED, tenant=domain.tenant, target=domain.domain)
        routes_forget(domain.domain)
    what = "renewed" if renewal else "issued"
    edge.edge_changed_notify(actor=actor, reason=f"certificate {what}: {domain.domain}")
    return cert


def _error_text(exc: Exception) -> tuple[str, bool]:
    """The failure in words, and whether it is the CA's rate limit."""
    if isinstance(exc, requests.RequestException):
        return (f"ACME directory {settings.ACME_DIRECTORY_URL} is unreachable "
                f"({type(exc).__name__}); we will retry."), False
    if isinstance(exc, errors.ValidationError):
        details = []
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error:
                    details.append(f"{chall.chall.typ}: {chall.error.detail or chall.error.typ}")
        return "The CA could not validate the domain: " + "; ".join(details or ["no detail given"]), False
    if isinstance(exc, messages.Error):
        limited = exc.code == "rateLimited"
        text = f"The CA refused: {exc.detail or exc.typ}"
        if limited:
            text = f"Rate limited by the CA ({exc.detail}); backing off before retrying."
        return text, limited
    if isinstance(exc, errors.TimeoutError):
        return f"The CA did not finish within {settings.ACME_TIMEOUT_SECONDS} s; we will retry.", False
    return f"{type(exc).__name__}: {exc}", False


def _failed(domain: Domain, cert: Certificate, exc: Exception, actor: Actor) -> Certificate:
    text, limited = _error_text(exc)
    logger.warning("certificate for %s failed: %s", domain.domain, text)
    now = timezone.now()
    cert.attempts += 1
    delay = RATE_LIMIT_RETRY if limited else RETRY[min(cert.attempts - 1, len(RETRY) - 1)]
    cert.next_attempt_at = now + delay
    if cert.status != Certificate.Status.ISSUED:
        # A failed renewal keeps the certificate that still works.
        cert.status = Certificate.Status.FAILED
    cert.last_error = text[:4000]
    cert.save(update_fields=["status", "attempts", "next_attempt_at", "last_error", "updated_at"])
    if domain.status in (S.VERIFIED, S.CERTIFICATE_PENDING):
        Domain.objects.filter(pk=domain.pk).update(
            status=S.CERTIFICATE_PENDING,
            status_reason=(
                f"Certificate request failed: {text} Next try {cert.next_attempt_at:%Y-%m-%d %H:%M} UTC."
            ),
            updated_at=now,
        )
        routes_forget(domain.domain)
    audit_record(actor=actor, action=Action.CERTIFICATE_FAILED, tenant=domain.tenant, target=domain.domain,
                 details={"error": text[:1000], "rate_limited": limited, "attempt": cert.attempts})
    return cert


def certificates_due(*, now: datetime | None = None) -> list[Domain]:
    """Domains whose certificate needs renewal, or whose failed request is due for a retry."""
    now = now or timezone.now()
    renew_before = now + timedelta(days=settings.ACME_RENEW_DAYS)
    renewals = Domain.objects.filter(
        kind=Domain.Kind.CUSTOM, status__in=(S.ACTIVE,), certificate__status=Certificate.Status.ISSUED,
        certificate__not_after__lte=renew_before,
    )
    retries = Domain.objects.filter(
        kind=Domain.Kind.CUSTOM, status__in=ISSUABLE, certificate__next_attempt_at__lte=now,
    )
    return list((renewals | retries).distinct().select_related("tenant"))

