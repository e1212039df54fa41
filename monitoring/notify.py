"""Message building and sending per channel kind. One call = one attempt; retries live in services."""

import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from core import outbound
from core.admin_links import admin_path
from monitoring.models import Channel, Delivery, Incident

PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
SLACK_COLOR = {"trigger": "#d92d20", "acknowledge": "#f79009", "resolve": "#12b76a", "test": "#2e90fa"}


@dataclass(frozen=True)
class Message:
    event: str  # Delivery.Event
    key: str
    title: str
    severity: str
    status: str
    url: str  # the incident in the admin
    thing_url: str  # the tenant, domain, deployment ... in the admin
    details: dict
    incident_id: int | None


class SendError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def admin_url(path: str) -> str:
    return f"{settings.PLATFORM_ADMIN_URL.rstrip('/')}{path}" if path else ""


def message_for(incident: Incident | None, event: str) -> Message:
    if incident is None:
        return Message(
            event,
            "platform:test",
            "Test alert from the platform control plane",
            "info",
            "test",
            admin_url(admin_path(Channel, "changelist")),
            "",
            {"note": "sent by send_test_alert"},
            None,
        )
    return Message(
        event,
        incident.dedup_key,
        incident.title,
        incident.severity,
        incident.status,
        admin_url(admin_path(incident)),
        admin_url(incident.link),
        incident.details,
        incident.pk,
    )


def _prefix(message: Message) -> str:
    return {
        "trigger": f"[{message.severity.upper()}]",
        "acknowledge": "[ACKNOWLEDGED]",
        "resolve": "[RESOLVED]",
        "test": "[TEST]",
    }[message.event]


def slack_payload(message: Message) -> dict:
    links = f"<{message.url}|Incident>" + (f" · <{message.thing_url}|Affected>" if message.thing_url else "")
    return {
        "text": f"{_prefix(message)} {message.title}",
        "attachments": [
            {
                "color": SLACK_COLOR[message.event],
                "title": message.title,
                "title_link": message.url,
                "text": links,
                "fields": [
                    {"title": "Key", "value": message.key, "short": True},
                    {"title": "Severity", "value": message.severity, "short": True},
                ],
            }
        ],
    }


def pagerduty_payload(message: Message, routing_key: str) -> dict:
    action = {"trigger": "trigger", "test": "trigger", "acknowledge": "acknowledge", "resolve": "resolve"}
    body: dict[str, Any] = {
        "routing_key": routing_key, "event_action": action[message.event], "dedup_key": message.key
    }
    if body["event_action"] == "trigger":
        body["payload"] = {
            "summary": message.title[:1024],
            "source": settings.PLATFORM_ADMIN_HOST,
            "severity": PAGERDUTY_SEVERITY.get(message.severity, "warning"),
            "component": message.key.split(":", 1)[0],
            "custom_details": message.details,
        }
        body["links"] = [{"href": message.url, "text": "Incident in the platform admin"}] + (
            [{"href": message.thing_url, "text": "Affected object"}] if message.thing_url else []
        )
    return body


def webhook_body(message: Message, delivery_id: int) -> dict:
    return {
        "event": message.event,
        "delivery": delivery_id,
        "incident": {
            "id": message.incident_id,
            "key": message.key,
            "title": message.title,
            "severity": message.severity,
            "status": message.status,
            "url": message.url,
            "affected_url": message.thing_url,
            "details": message.details,
        },
    }


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """sha256=HMAC(secret, "<timestamp>.<body>"); receivers recompute it and compare in constant time."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST through core.outbound (addresses checked and pinned, total deadline, capped
    reply); redirects are not followed: a 3xx is a failed delivery."""
    host = urllib.parse.urlparse(url).netloc
    try:
        response = outbound.fetch(
            url,
            method="POST",
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": "platform-alerts/1", **headers},
            timeout=settings.ALERT_DELIVERY_TIMEOUT_SECONDS,
            max_redirects=0,
            max_bytes=65536,
        )
    except outbound.OutboundError as exc:
        raise SendError(f"cannot reach {host}: {exc}") from None
    if response.status >= 400:
        raise SendError(f"HTTP {response.status} from {host}", response.status)
    if response.status >= 300:
        raise SendError(f"HTTP {response.status} from {host} (redirects are not followed)", response.status)
    return response.status


def send(channel: Channel, secret: str, message: Message, delivery: Delivery) -> int | None:
    """Send once. Returns the HTTP status (None for e-mail); raises SendError on failure."""
    if channel.kind == Channel.Kind.EMAIL:
        recipients = [r.strip() for r in channel.target.split(",") if r.strip()]
        text = "\n".join(
            [
                message.title,
                "",
                f"Severity: {message.severity}",
                f"Key: {message.key}",
                f"Incident: {message.url}",
            ]
            + ([f"Affected: {message.thing_url}"] if message.thing_url else [])
        )
        try:
            send_mail(
                f"{_prefix(message)} {message.title}"[:200], text, settings.ALERT_EMAIL_FROM, recipients
            )
        except Exception as exc:  # SMTP errors come in many classes
            raise SendError(f"e-mail not sent: {type(exc).__name__}: {exc}") from None
        return None
    if channel.kind == Channel.Kind.SLACK:
        return _post(secret, json.dumps(slack_payload(message)).encode(), {})
    if channel.kind == Channel.Kind.PAGERDUTY:
        url = channel.target or settings.PAGERDUTY_EVENTS_URL
        return _post(url, json.dumps(pagerduty_payload(message, secret)).encode(), {})
    body = json.dumps(webhook_body(message, delivery.pk)).encode()
    timestamp = str(int(time.time()))
    return _post(
        channel.target,
        body,
        {
            "X-Platform-Event": message.event,
            "X-Platform-Delivery": str(delivery.pk),
            "X-Platform-Timestamp": timestamp,
            "X-Platform-Signature": webhook_signature(secret, timestamp, body),
        },
    )
