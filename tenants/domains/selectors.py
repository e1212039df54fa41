"""Read-side queries for what edges serve: certificates decrypted for the edge that needs them.

Only edges (the local nginx, a compose target's edge, an AWS target's ACM) call these; the keys
they return are never logged or shown.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from core.crypto import secret_decrypt
from core.db import connection
from tenants.models import Certificate, Domain, PlatformCertificate


@dataclass(frozen=True)
class PlatformCertificateMaterial:
    names: list[str]
    chain_pem: bytes
    key_pem: bytes
    serial: str
    not_after: datetime


@dataclass(frozen=True)
class DomainCertificate:
    domain: str
    chain_pem: bytes
    key_pem: bytes
    serial: str
    not_after: datetime | None


def platform_certificate_material() -> PlatformCertificateMaterial | None:
    """The issued wildcard for PLATFORM_BASE_DOMAIN (chain and key in PEM), or None before the first."""
    connection.set_schema_to_public()
    base = settings.PLATFORM_BASE_DOMAIN.strip().lower().rstrip(".")
    cert = PlatformCertificate.objects.filter(base_domain=base).exclude(chain_encrypted="").first()
    if cert is None or cert.not_after is None:
        return None
    return PlatformCertificateMaterial(
        names=list(cert.names), chain_pem=secret_decrypt(cert.chain_encrypted),
        key_pem=secret_decrypt(cert.key_encrypted), serial=cert.serial, not_after=cert.not_after,
    )


def active_domain_serials() -> dict[str, str]:
    """Active custom domains with an issued certificate: name -> certificate serial (no keys)."""
    connection.set_schema_to_public()
    return dict(
        Domain.objects.filter(kind=Domain.Kind.CUSTOM, status=Domain.Status.ACTIVE,
                              certificate__status=Certificate.Status.ISSUED)
        .order_by("domain").values_list("domain", "certificate__serial")
    )


def domain_certificates(names: list[str]) -> Iterator[DomainCertificate]:
    """The decrypted certificates of these active custom domains, one at a time."""
    connection.set_schema_to_public()
    rows = (
        Domain.objects.filter(domain__in=names, kind=Domain.Kind.CUSTOM, status=Domain.Status.ACTIVE,
                              certificate__status=Certificate.Status.ISSUED)
        .order_by("domain")
        .values_list("domain", "certificate__chain_encrypted", "certificate__key_encrypted",
                     "certificate__serial", "certificate__not_after")
    )
    for name, chain, key, serial, not_after in rows.iterator(chunk_size=200):
        yield DomainCertificate(name, secret_decrypt(chain), secret_decrypt(key), serial, not_after)
