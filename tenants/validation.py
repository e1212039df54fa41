"""Input rules for tenants: subdomains, and the schema names derived from them."""

import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from tenants.errors import TenantValidationError

SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
RESERVED_SUBDOMAINS = frozenset(
    {
        "www", "admin", "api", "app", "public", "static", "media", "assets", "cdn", "mail",
        "smtp", "imap", "pop", "ftp", "ns1", "ns2", "dns", "status", "help", "support", "docs",
        "blog", "billing", "dashboard", "internal", "localhost", "information-schema",
    }
)
RESERVED_PREFIXES = ("pg-", "xn--")


def subdomain_normalise(raw: str) -> str:
    subdomain = (raw or "").strip().lower()
    if not 3 <= len(subdomain) <= 63:
        raise TenantValidationError(
            f"Subdomain {raw!r} must be 3 to 63 characters long (it has {len(subdomain)})."
        )
    if not SUBDOMAIN_RE.match(subdomain):
        raise TenantValidationError(
            f"Subdomain {raw!r} may contain only letters a-z, digits and hyphens, "
            "and must start and end with a letter or digit."
        )
    if "--" in subdomain[2:4] or subdomain.startswith(RESERVED_PREFIXES):
        raise TenantValidationError(
            f"Subdomain {raw!r} is reserved: names starting with 'pg-' or with '--' in the third "
            "and fourth characters (like 'xn--') are not allowed."
        )
    if subdomain in RESERVED_SUBDOMAINS:
        raise TenantValidationError(f"Subdomain {raw!r} is reserved by the platform; pick another.")
    return subdomain


def schema_name_for(subdomain: str) -> str:
    """Map a valid subdomain to its schema: hyphens become underscores.

    Subdomains never contain underscores, so the mapping is one-to-one; the result is at most
    63 characters, a legal PostgreSQL identifier, and never starts with ``pg_``.
    """
    return subdomain.replace("-", "_")


def email_normalise(raw: str) -> str:
    email = (raw or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise TenantValidationError(f"Owner email {raw!r} is not a valid email address.") from None
    return email.lower()
