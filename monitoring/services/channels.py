"""Alert channels: validation (a changed destination needs its secret again), create, update, delete."""

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from core.audit import Action, Actor, audit_record
from monitoring.errors import MonitoringError
from monitoring.models import Channel, Severity
from monitoring.secrets import secret_encrypt, secret_hint

CHANNEL_SECRET_NEEDED: dict[str, str] = {
    Channel.Kind.SLACK: "the Slack incoming-webhook URL",
    Channel.Kind.PAGERDUTY: "the PagerDuty integration (routing) key",
    Channel.Kind.WEBHOOK: "a signing secret of at least 16 characters",
}


def _url_ok(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def channel_validate(*, kind: str, target: str, secret: str | None, existing: Channel | None = None) -> None:
    """Raise MonitoringError saying what to fix. `secret=None` keeps the stored one (edits)."""
    if kind not in Channel.Kind.values:
        raise MonitoringError(f"Unknown channel kind {kind!r}: use one of {', '.join(Channel.Kind.values)}.")
    if (
        secret is None
        and existing is not None
        and existing.secret_encrypted
        and kind != Channel.Kind.EMAIL
        and (kind != existing.kind or target != existing.target)
    ):
        # The stored key was given for the old destination: sending it to a new one would leak it.
        raise MonitoringError(
            "You changed where this channel sends (its kind or target): enter its secret again in "
            "the same save. The stored secret is only ever sent to the destination it was given for."
        )
    has_secret = bool(secret) or (secret is None and existing is not None and bool(existing.secret_encrypted))
    if kind == Channel.Kind.EMAIL:
        recipients = [r.strip() for r in target.split(",") if r.strip()]
        if not recipients:
            raise MonitoringError(
                "An e-mail channel needs recipients: comma-separated addresses in 'target'."
            )
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise MonitoringError(
                    f"{address!r} is not an e-mail address; fix the channel's recipients."
                ) from None
        if secret:
            raise MonitoringError("An e-mail channel has no secret; leave the secret empty.")
        return
    if not has_secret:
        raise MonitoringError(f"A {Channel.Kind(kind).label} channel needs {CHANNEL_SECRET_NEEDED[kind]}.")
    if kind == Channel.Kind.SLACK and secret and not _url_ok(secret):
        raise MonitoringError(
            "The Slack secret must be the incoming-webhook URL (https://hooks.slack.com/...)."
        )
    if kind == Channel.Kind.PAGERDUTY and secret and (len(secret) < 8 or any(c.isspace() for c in secret)):
        raise MonitoringError("The PagerDuty routing key looks wrong: copy the 32-character integration key.")
    if kind == Channel.Kind.PAGERDUTY and target and not _url_ok(target):
        raise MonitoringError("The PagerDuty events URL must be an http(s) URL, or empty for the default.")
    if kind == Channel.Kind.WEBHOOK:
        if not _url_ok(target):
            raise MonitoringError("A webhook channel needs its http(s) URL in 'target'.")
        if secret and len(secret) < 16:
            raise MonitoringError("The webhook signing secret must be at least 16 characters long.")


def _store_secret(channel: Channel, secret: str) -> None:
    channel.secret_encrypted = secret_encrypt(secret) if secret else ""
    channel.secret_hint = secret_hint(secret) if secret else ""


def channel_create(
    *,
    name: str,
    kind: str,
    target: str = "",
    secret: str = "",
    min_severity: str = Severity.WARNING,
    enabled: bool = True,
    actor: Actor,
) -> Channel:
    name, target = name.strip(), target.strip()
    if not name:
        raise MonitoringError("A channel needs a name.")
    if Channel.objects.filter(name=name).exists():
        raise MonitoringError(f"A channel named {name!r} exists already; pick another name.")
    if min_severity not in Severity.values:
        raise MonitoringError(f"min_severity must be one of {', '.join(Severity.values)}.")
    channel_validate(kind=kind, target=target, secret=secret.strip())
    channel = Channel(name=name, kind=kind, target=target, min_severity=min_severity, enabled=enabled)
    _store_secret(channel, secret.strip())
    channel.save()
    audit_record(
        actor=actor,
        action=Action.CHANNEL_CREATED,
        target=name,
        details={"kind": kind, "min_severity": min_severity},
    )
    return channel


def channel_update(*, channel: Channel, actor: Actor, secret: str | None = None, **fields: Any) -> Channel:
    """Change a channel; `secret=None` keeps the stored secret, a new value replaces it."""
    changed = {k: v for k, v in fields.items() if getattr(channel, k) != v}
    kind, target = fields.get("kind", channel.kind), fields.get("target", channel.target).strip()
    channel_validate(kind=kind, target=target, secret=secret.strip() if secret else None, existing=channel)
    for key, value in changed.items():
        setattr(channel, key, value.strip() if isinstance(value, str) else value)
    if secret:
        _store_secret(channel, secret.strip())
    elif channel.kind == Channel.Kind.EMAIL:
        _store_secret(channel, "")  # e-mail has no secret: a key kept from another kind is dropped
    channel.save()
    audit_record(
        actor=actor,
        action=Action.CHANNEL_CHANGED,
        target=channel.name,
        details={"fields": sorted(changed), "secret_replaced": bool(secret)},
    )
    return channel


def channel_delete(*, channel: Channel, actor: Actor) -> None:
    audit_record(
        actor=actor, action=Action.CHANNEL_DELETED, target=channel.name, details={"kind": channel.kind}
    )
    channel.delete()
