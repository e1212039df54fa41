"""API keys: make (shown once, stored as sha256), authenticate, revoke."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from api.errors import KeyValidationError
from api.models import SCOPES, SHOP_SCOPES, APIKey
from core.audit import Action, Actor, audit_record
from core.models import AuditEvent
from tenants.models import Tenant
from webhooks.services import endpoint_disable

logger = logging.getLogger(__name__)

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
PREFIXES: dict[str, str] = {APIKey.Kind.STAFF: "plt_", APIKey.Kind.SHOP: "shp_"}
# last_used_at is written at most this often per key (not on every call).
LAST_USED_EVERY_SECONDS = 60


@dataclass(frozen=True)
class NewKey:
    key: APIKey
    token: str  # shown once; only its sha256 is stored


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(kind: str) -> tuple[str, str]:
    visible = PREFIXES[kind] + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    # 256 bits of secret after the visible prefix.
    return visible, f"{visible}_{secrets.token_urlsafe(32)}"


def _scopes_check(scopes: list[str], allowed: dict[str, str]) -> list[str]:
    unknown = sorted(set(scopes) - set(allowed))
    if unknown:
        raise KeyValidationError(
            f"Unknown scope(s) {', '.join(unknown)}; choose from {', '.join(allowed)}."
        )
    if not scopes:
        raise KeyValidationError("Choose at least one scope.")
    return [s for s in allowed if s in scopes]  # canonical order, no repeats


def apikey_create(
    *,
    name: str,
    scopes: list[str],
    actor: Actor,
    tenant: Tenant | None = None,
    expires_at: datetime | None = None,
) -> NewKey:
    """Make a staff key (no tenant) or a shop key (for ``tenant``); the token is returned once."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise KeyValidationError("Give the key a name of 1 to 100 characters (what uses it).")
    kind = APIKey.Kind.SHOP if tenant is not None else APIKey.Kind.STAFF
    scopes = _scopes_check(list(scopes), SHOP_SCOPES if tenant is not None else SCOPES)
    if expires_at is not None and expires_at <= timezone.now():
        raise KeyValidationError("The expiry is in the past; leave it empty or pick a later time.")
    if tenant is not None and tenant.status != Tenant.Status.ACTIVE:
        raise KeyValidationError(f"Shop {tenant.subdomain!r} is {tenant.status}; it cannot get keys.")
    visible, token = _new_token(kind)
    with transaction.atomic():
        key = APIKey.objects.create(
            kind=kind, name=name, prefix=visible, token_sha256=token_sha256(token), scopes=scopes,
            tenant=tenant, created_by=f"{actor.type}:{actor.name}"[:200], expires_at=expires_at,
        )
        audit_record(
            actor=actor, action=Action.API_KEY_CREATED, tenant=tenant, target=str(key),
            details={"scopes": scopes, "kind": kind,
                     "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return NewKey(key, token)


def apikey_revoke(*, key: APIKey, actor: Actor) -> APIKey:
    """Revoke a key; the webhook endpoints it registered stop receiving (disabled, audited)."""
    if key.revoked_at is not None:
        return key
    with transaction.atomic():
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action=Action.API_KEY_REVOKED, tenant=key.tenant, target=str(key))
        for endpoint in key.webhook_endpoints.filter(enabled=True).select_related("tenant"):
            endpoint_disable(endpoint=endpoint, actor=actor, reason=f"its API key {key.prefix} was revoked")
    return key


def apikey_authenticate(token: str) -> APIKey | None:
    """The usable key for a presented token, or None (unknown, revoked, expired)."""
    if not token or len(token) > 200:
        return None
    key = APIKey.objects.filter(token_sha256=token_sha256(token)).select_related("tenant").first()
    now = timezone.now()
    if key is None or not key.usable(now):
        return None
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_EVERY_SECONDS:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


READ_METHODS = ("GET", "HEAD")


def apikey_read_record(*, key: APIKey, method: str, path: str, status: int) -> None:
    """Audit a read made with a key (api.read): one insert once the answer's status is known.

    Changes are audited by the services they go through, and refusals for a missing scope where
    they are refused; this covers the rest, so every call a key makes is in the audit log.
    Staff keys' reads carry no tenant (finding it would cost a query per call; the path names it).
    """
    try:
        audit_record(
            actor=Actor.api_key(key), action=Action.API_READ, tenant=key.tenant, target=path,
            details={"method": method, "status": status},
        )
    except DatabaseError:  # the answer is already made: a failed audit write is logged, not raised
        logger.exception("could not audit %s %s by key %s", method, path, key.prefix)


def api_reads_prune(*, now: datetime | None = None, batch: int = 50_000) -> int:
    """Delete the audited reads (``api.read``) older than API_READ_AUDIT_RETENTION_DAYS, at most
    ``batch`` per call; changes and refusals are kept. Audited when anything went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.API_READ_AUDIT_RETENTION_DAYS)
    old = AuditEvent.objects.filter(action=Action.API_READ, created_at__lt=cutoff)
    deleted, _ = AuditEvent.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:batch])).delete()
    if deleted:
        audit_record(actor=Actor.system(), action=Action.API_READS_PRUNED, target="audit log",
                     details={"deleted": deleted, "older_than": cutoff.isoformat()})
    return deleted
