"""Encryption at rest for secrets the platform keeps (ACME account key, certificate keys).

Fernet (AES-128-CBC + HMAC-SHA256) with keys from PLATFORM_ENCRYPTION_KEYS, newest first, so
keys can be rotated: old ciphertexts still decrypt, new ones use the first key.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            "PLATFORM_ENCRYPTION_KEYS is empty: set it to a Fernet key (see .env.example) "
            "before storing certificates."
        )
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "PLATFORM_ENCRYPTION_KEYS must hold url-safe base64 Fernet keys of 32 bytes."
        ) from None


def _current() -> MultiFernet:
    return _fernet(tuple(settings.PLATFORM_ENCRYPTION_KEYS))


def secret_encrypt(plaintext: bytes) -> str:
    return _current().encrypt(plaintext).decode()


def secret_decrypt(ciphertext: str) -> bytes:
    try:
        return _current().decrypt(ciphertext.encode())
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored secret does not decrypt with PLATFORM_ENCRYPTION_KEYS: was a key removed? "
            "Put the old key back (after the new one) to read it."
        ) from None
