"""Channel secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from
MONITORING_SECRETS_KEY, or from SECRET_KEY when that is not set."""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from monitoring.errors import MonitoringError


@lru_cache(maxsize=4)
def _fernet(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"platform-monitoring", info=b"channel-secrets")
    return Fernet(base64.urlsafe_b64encode(key.derive(material.encode())))


def _material() -> str:
    return settings.MONITORING_SECRETS_KEY or settings.SECRET_KEY


def secret_encrypt(plain: str) -> str:
    return _fernet(_material()).encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _fernet(_material()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise MonitoringError(
            "A channel secret cannot be decrypted: MONITORING_SECRETS_KEY (or SECRET_KEY) changed since it "
            "was saved. Enter the channel's secret again in the admin."
        ) from None


def secret_hint(plain: str) -> str:
    """What the admin may show of a secret: its length and last 4 characters, never more."""
    return f"…{plain[-4:]} ({len(plain)} chars)" if len(plain) >= 12 else f"({len(plain)} chars)"
