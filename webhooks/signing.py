"""Standard Webhooks signatures (https://www.standardwebhooks.com/), with the `standardwebhooks`
library: headers webhook-id, webhook-timestamp and webhook-signature, the latter
`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` under the secret `whsec_<base64 key>`.
Several signatures are space-separated: during a secret rotation both the new and old one sign.
"""

import base64
import binascii
import secrets
from datetime import datetime

from standardwebhooks import Webhook

from webhooks.errors import WebhookError

PREFIX = "whsec_"
KEY_BYTES = 24  # like Svix's generated secrets; the spec allows 24 to 64 bytes


def secret_generate() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def secret_validate(secret: str) -> str:
    """A caller-chosen secret, checked: `whsec_` and base64 of 24 to 64 random bytes."""
    secret = secret.strip()
    if not secret.startswith(PREFIX):
        raise WebhookError(
            "A webhook secret starts with 'whsec_' followed by base64; leave it empty to get one."
        )
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError(
            "The part after 'whsec_' is not valid base64; leave the secret empty to get one."
        ) from None
    if not 24 <= len(key) <= 64:
        raise WebhookError(f"A webhook secret's key must be 24 to 64 bytes (this one is {len(key)}).")
    return secret


def sign_headers(*, msg_id: str, body: bytes, secrets: list[str], at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed with each secret (newest first)."""
    signatures = [Webhook(secret).sign(msg_id, at, body) for secret in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
