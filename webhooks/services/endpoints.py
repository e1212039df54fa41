"""Webhook endpoints: validate, create (the secret returned once), change, rotate the secret,
disable, enable, delete. Every change is audited."""

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import crypto, outbound
from core.audit import Action, Actor, audit_record
from tenants.models import Tenant
from webhooks import events, signing
from webhooks.errors import WebhookError
from webhooks.models import Endpoint

if TYPE_CHECKING:  # api sits above webhooks: it passes its key in, webhooks never imports it
    from api.models import APIKey


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class EndpointCreated:
    endpoint: Endpoint
    secret: str  # whsec_...: show it once, it is never shown again


PLAIN_HTTP_REFUSED = (
    "{url!r} is plain http://: use https:// (a webhook carries a shop's data and its signature). "
    "Plain http:// is accepted only for hosts whose addresses are all in OUTBOUND_ALLOWED_NETWORKS "
    "(test and private deployments)."
)


def plain_http_allowed(host: str) -> bool:
    """http:// (no TLS) only to an address, or a name whose every address, inside
    OUTBOUND_ALLOWED_NETWORKS: the operator's own test or private network. Checked when an endpoint
    is saved and again at every delivery (a name may point elsewhere later)."""
    if not settings.OUTBOUND_ALLOWED_NETWORKS:
        return False  # nothing allowed: no lookup either
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = outbound.system_resolve(host)
        except outbound.OutboundError:
            return False
    return bool(addresses) and all(outbound.explicitly_allowed(a) for a in addresses)


def _url_validate(url: str) -> str:
    url = (url or "").strip()
    if len(url) > 1000:
        raise WebhookError("The endpoint URL is longer than 1,000 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http(s) URL; give the full URL, e.g. https://example.com/hooks.")
    if parts.username or parts.password:
        raise WebhookError("Put no credentials in the endpoint URL: verify the webhook signature instead.")
    try:
        _ = parts.port
    except ValueError:
        raise WebhookError(f"{url!r} has an invalid port.") from None
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        outbound.check_address(host)
    except ValueError:
        pass  # a name: it is resolved and checked at every delivery
    except outbound.OutboundRefused as exc:
        raise WebhookError(f"The endpoint URL is {exc}") from None
    if parts.scheme == "http" and not plain_http_allowed(parts.hostname):
        raise WebhookError(PLAIN_HTTP_REFUSED.format(url=url))
    return url


def _events_validate(chosen: list[str] | None) -> list[str]:
    chosen = sorted(set(chosen or []))
    unknown = [name for name in chosen if name not in events.EVENT_TYPES]
    if unknown:
        raise WebhookError(
            f"Unknown event type(s) {', '.join(unknown)}: use any of {', '.join(events.EVENT_TYPES)} "
            "(or none for every event)."
        )
    return chosen


def _owner_label(endpoint: Endpoint) -> str:
    return endpoint.tenant.subdomain if endpoint.tenant else "platform"


def endpoint_validate(*, url: str, events: list[str] | None, secret: str = "",
                      tenant: Tenant | None = None) -> None:
    """Raise WebhookError saying what to fix (forms call this before saving)."""
    _url_validate(url)
    _events_validate(events)
    if secret:
        signing.secret_validate(secret)
    if tenant is not None and tenant.status == Tenant.Status.DELETED:
        raise WebhookError(f"Shop {tenant.subdomain!r} is deleted; it cannot get a webhook endpoint.")


def endpoint_create(
    *,
    url: str,
    actor: Actor,
    tenant: Tenant | None = None,
    events: list[str] | None = None,
    description: str = "",
    secret: str = "",
    api_key: "APIKey | None" = None,
) -> EndpointCreated:
    """A new endpoint: the platform's (tenant None, every shop's events) or one shop's.

    `secret` empty: a new `whsec_` secret is made. The secret is returned once, here.
    `api_key`: the key that registers it through the API (it owns it there).
    """
    url = _url_validate(url)
    chosen = _events_validate(events)
    if tenant is not None and tenant.status == Tenant.Status.DELETED:
        raise WebhookError(f"Shop {tenant.subdomain!r} is deleted; it cannot get a webhook endpoint.")
    description = (description or "").strip()
    if len(description) > 200:
        raise WebhookError("The description is longer than 200 characters.")
    secret = signing.secret_validate(secret) if secret else signing.secret_generate()
    with transaction.atomic():
        endpoint = Endpoint.objects.create(
            tenant=tenant,
            api_key=api_key,
            url=url,
            description=description,
            events=chosen,
            secret_encrypted=crypto.secret_encrypt(secret.encode()),
            created_by=f"{actor.type}:{actor.name}"[:250],
        )
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_CREATED,
            tenant=tenant,
            target=url,
            details={"endpoint": endpoint.pk, "events": chosen or "all"},
        )
    return EndpointCreated(endpoint, secret)


def endpoint_update(
    *,
    endpoint: Endpoint,
    actor: Actor,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
) -> Endpoint:
    """Change an endpoint's URL, events or description (None keeps a field as it is)."""
    changes: dict[str, Any] = {}
    if url is not None and (url := _url_validate(url)) != endpoint.url:
        changes["url"] = url
    if events is not None and (chosen := _events_validate(events)) != endpoint.events:
        changes["events"] = chosen
    if description is not None and (description := description.strip()) != endpoint.description:
        if len(description) > 200:
            raise WebhookError("The description is longer than 200 characters.")
        changes["description"] = description
    if not changes:
        return endpoint
    with transaction.atomic():
        for field, value in changes.items():
            setattr(endpoint, field, value)
        endpoint.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_CHANGED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "fields": sorted(changes)},
        )
    return endpoint


def endpoint_rotate_secret(*, endpoint: Endpoint, actor: Actor, secret: str = "") -> str:
    """A new secret (returned once); the old one also signs for WEBHOOK_SECRET_ROTATION_GRACE_HOURS."""
    secret = signing.secret_validate(secret) if secret else signing.secret_generate()
    grace = timedelta(hours=settings.WEBHOOK_SECRET_ROTATION_GRACE_HOURS)
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted if grace else ""
        endpoint.previous_secret_expires_at = timezone.now() + grace if grace else None
        endpoint.secret_encrypted = crypto.secret_encrypt(secret.encode())
        endpoint.save(update_fields=[
            "secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at", "updated_at"
        ])
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_SECRET_ROTATED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk,
                     "old_secret_signs_until": _iso(endpoint.previous_secret_expires_at)},
        )
    return secret


def endpoint_disable(*, endpoint: Endpoint, actor: Actor, reason: str) -> bool:
    """Stop sending to an endpoint; its pending deliveries fail at their next turn. False: it was off."""
    with transaction.atomic():
        if not Endpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
            enabled=False, disabled_reason=reason[:300], updated_at=timezone.now()
        ):
            return False
        endpoint.enabled, endpoint.disabled_reason = False, reason[:300]
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_DISABLED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "reason": reason[:300]},
        )
    return True


def endpoint_enable(*, endpoint: Endpoint, actor: Actor) -> bool:
    """Send again (failures forgotten). Deliveries that failed meanwhile can be re-sent."""
    with transaction.atomic():
        if not Endpoint.objects.filter(pk=endpoint.pk, enabled=False).update(
            enabled=True, disabled_reason="", consecutive_failures=0, failing_since=None,
            updated_at=timezone.now(),
        ):
            return False
        endpoint.enabled, endpoint.disabled_reason = True, ""
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_ENABLED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk},
        )
    return True


def endpoint_delete(*, endpoint: Endpoint, actor: Actor) -> None:
    """Delete an endpoint with its deliveries and their attempts."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=Action.WEBHOOK_ENDPOINT_DELETED,
            tenant=endpoint.tenant,
            target=endpoint.url,
            details={"endpoint": endpoint.pk, "owner": _owner_label(endpoint)},
        )
        endpoint.delete()
