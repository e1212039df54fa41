"""Per-key rate limits and Idempotency-Key replay, both in Redis (the Django cache)."""

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from api.errors import IdempotencyConflict, IdempotencyMismatch, RateLimited
from api.models import APIKey

_PENDING = "pending"


def rate_limit_check(key: APIKey) -> None:
    """A fixed one-minute window per key; raises RateLimited with the seconds to wait."""
    limit = settings.API_RATE_LIMIT_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    window = f"api-rate:{key.pk}:{int(now // 60)}"
    cache.add(window, 0, 120)
    try:
        used = cache.incr(window)
    except ValueError:  # the window expired between add and incr
        cache.add(window, 1, 120)
        used = 1
    if used > limit:
        wait = max(1, 60 - int(now % 60))
        raise RateLimited(
            f"This key may make {limit} requests a minute and has used them; retry in {wait} s.", wait
        )


def fingerprint(method: str, path: str, body: Any) -> str:
    text = json.dumps([method, path, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def idempotent(
    *, key: APIKey, idempotency_key: str | None, fp: str, run: Callable[[], tuple[int, dict]]
) -> tuple[int, dict, bool]:
    """Run ``run`` once per (API key, Idempotency-Key); a retry gets the stored answer.

    Returns (status, body, replayed). The same Idempotency-Key with a different request is
    refused; a retry while the first is still running is told to wait. A failed run is not kept,
    so the client can fix the request and send it again with the same key.
    """
    if not idempotency_key:
        status, body = run()
        return status, body, False
    if len(idempotency_key) > 255:
        raise IdempotencyMismatch("Idempotency-Key is longer than 255 characters; use a UUID.")
    slot = f"api-idem:{key.pk}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
    ttl = settings.API_IDEMPOTENCY_SECONDS
    if not cache.add(slot, {"fp": fp, "state": _PENDING}, ttl):
        stored = cache.get(slot) or {}
        if stored.get("fp") != fp:
            raise IdempotencyMismatch(
                "This Idempotency-Key was used with a different request; use a new key for a new "
                "request."
            )
        if stored.get("state") == _PENDING:
            raise IdempotencyConflict(
                "A request with this Idempotency-Key is still running; retry in a moment."
            )
        return stored["status"], stored["body"], True
    try:
        status, body = run()
    except BaseException:
        cache.delete(slot)
        raise
    cache.set(slot, {"fp": fp, "state": "done", "status": status, "body": body}, ttl)
    return status, body, False
