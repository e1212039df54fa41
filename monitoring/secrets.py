"""Channel secrets at rest, with the platform's own encryption (core/crypto.py: Fernet under
PLATFORM_ENCRYPTION_KEYS, newest key first, so keys rotate without re-entering secrets)."""

from django.core.exceptions import ImproperlyConfigured

from core import crypto
from monitoring.errors import MonitoringError


def secret_encrypt(plain: str) -> str:
    return crypto.secret_encrypt(plain.encode())


def secret_decrypt(token: str) -> str:
    try:
        return crypto.secret_decrypt(token).decode()
    except ImproperlyConfigured as exc:
        raise MonitoringError(
            f"A channel secret cannot be decrypted: {exc} Or enter the channel's secret again in the admin."
        ) from None


def secret_hint(plain: str) -> str:
    """What the admin may show of a secret: its length and last 4 characters, never more."""
    return f"…{plain[-4:]} ({len(plain)} chars)" if len(plain) >= 12 else f"({len(plain)} chars)"
