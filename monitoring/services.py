"""Monitoring services: probes now; alert rules, channels and incidents below."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from core.audit import Action, Actor, audit_record
from core.db import connection
from core.facts import SourceUnavailable
from monitoring import jobs  # it imports this module too: used at call time
from monitoring.errors import MonitoringError
from monitoring.models import (
    SEVERITY_RANK,
    AlertRule,
    Channel,
    Delivery,
    Incident,
    ProbeHourly,
    ProbeResult,
    ProbeState,
    Severity,
)
from monitoring.notify import SendError, message_for, send
from monitoring.probes import ProbeOutcome, probe_url
from monitoring.rules import EVALUATORS, SPECS
from monitoring.secrets import secret_decrypt, secret_encrypt, secret_hint
from monitoring.selectors import ProbeTarget, probe_targets
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeRunSummary:
    total: int
    up: int
    down: list[tuple[str, str]]  # (host, error)


def _connect_to(host: str) -> str:
    mapping = settings.PROBE_CONNECT_TO
    return mapping.get(host) or mapping.get("*", "")


def _probe(target: ProbeTarget) -> ProbeOutcome:
    return probe_url(
        target.url,
        connect_to=_connect_to(target.host),
        timeout=settings.PROBE_TIMEOUT_SECONDS,
        ca_file=settings.PROBE_CA_FILE,
        verify=settings.PROBE_VERIFY_TLS,
    )


def probe_run(*, tenant: Tenant | None = None) -> ProbeRunSummary:
    """Probe every active shop host (or one tenant's), with bounded concurrency, and store the results."""
    if tenant is not None and tenant.status != Tenant.Status.ACTIVE:
        raise MonitoringError(
            f"Tenant {tenant.subdomain!r} is {tenant.status}; only active shops are probed (resume it first)."
        )
    targets = probe_targets(tenant=tenant)
    if not targets:
        if tenant is None:
            ProbeState.objects.all().delete()  # no shop left to watch: no stale "last probe" either
        return ProbeRunSummary(0, 0, [])
    with ThreadPoolExecutor(max_workers=max(1, min(settings.PROBE_CONCURRENCY, len(targets)))) as pool:
        outcomes = list(pool.map(_probe, targets))
    results = list(zip(targets, outcomes, strict=True))
    probe_record(results=results, checked_at=timezone.now(), complete=tenant is None)
    down = [(t.host, o.error) for t, o in results if not o.ok]
    logger.info("probed %d host(s): %d up, %d down", len(targets), len(targets) - len(down), len(down))
    return ProbeRunSummary(len(targets), len(targets) - len(down), down)


_HOURLY_UPSERT = """
    INSERT INTO monitoring_probehourly (host, tenant_id, hour, total, up, latency_ms_sum, latency_count)
    SELECT * FROM unnest(%s::varchar[], %s::uuid[], %s::timestamptz[], %s::int[], %s::int[], %s::float8[],
                         %s::int[])
    ON CONFLICT (host, hour) DO UPDATE SET
        total = monitoring_probehourly.total + EXCLUDED.total,
        up = monitoring_probehourly.up + EXCLUDED.up,
        latency_ms_sum = monitoring_probehourly.latency_ms_sum + EXCLUDED.latency_ms_sum,
        latency_count = monitoring_probehourly.latency_count + EXCLUDED.latency_count
"""


def probe_record(
    *, results: list[tuple[ProbeTarget, ProbeOutcome]], checked_at: datetime, complete: bool = False
) -> None:
    """Store one probe round: raw rows, each host's latest state (and failure streak), hourly counts.

    `complete` means every target was probed: states of hosts no longer probed are dropped.
    """
    connection.set_schema_to_public()
    hosts = [t.host for t, _ in results]
    with transaction.atomic():
        ProbeResult.objects.bulk_create(
            [
                ProbeResult(
                    tenant_id=t.tenant_id,
                    host=t.host,
                    url=t.url,
                    checked_at=checked_at,
                    ok=o.ok,
                    status_code=o.status_code,
                    latency_ms=o.latency_ms,
                    error=o.error,
                    tls_expires_at=o.tls_expires_at,
                )
                for t, o in results
            ],
            batch_size=2000,
        )
        before = {
            host: (failures, ok, changed_at)
            for host, failures, ok, changed_at in ProbeState.objects.filter(host__in=hosts).values_list(
                "host", "failures", "ok", "changed_at"
            )
        }
        states = []
        for t, o in results:
            failures, was_ok, changed_at = before.get(t.host, (0, None, checked_at))
            states.append(
                ProbeState(
                    host=t.host,
                    tenant_id=t.tenant_id,
                    url=t.url,
                    checked_at=checked_at,
                    ok=o.ok,
                    status_code=o.status_code,
                    latency_ms=o.latency_ms,
                    error=o.error,
                    tls_expires_at=o.tls_expires_at,
                    failures=0 if o.ok else failures + 1,
                    changed_at=changed_at if was_ok == o.ok else checked_at,
                )
            )
        ProbeState.objects.bulk_create(
            states,
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["host"],
            update_fields=[
                "tenant",
                "url",
                "checked_at",
                "ok",
                "status_code",
                "latency_ms",
                "error",
                "tls_expires_at",
                "failures",
                "changed_at",
            ],
        )
        if complete:
            ProbeState.objects.exclude(host__in=hosts).delete()
        hour = checked_at.replace(minute=0, second=0, microsecond=0)
        with connection.cursor() as cursor:
            cursor.execute(
                _HOURLY_UPSERT,
                [
                    hosts,
                    [t.tenant_id for t, _ in results],
                    [hour] * len(results),
                    [1] * len(results),
                    [int(o.ok) for _, o in results],
                    [o.latency_ms or 0.0 for _, o in results],
                    [int(o.latency_ms is not None) for _, o in results],
                ],
            )


def probe_prune(*, now: datetime | None = None) -> int:
    """Delete raw probe results older than PROBE_RETENTION_DAYS and hourly counts older than
    PROBE_HOURLY_RETENTION_DAYS. Returns the number of raw results deleted."""
    now = now or timezone.now()
    connection.set_schema_to_public()
    deleted, _ = ProbeResult.objects.filter(
        checked_at__lt=now - timedelta(days=settings.PROBE_RETENTION_DAYS)
    ).delete()
    ProbeHourly.objects.filter(hour__lt=now - timedelta(days=settings.PROBE_HOURLY_RETENTION_DAYS)).delete()
    return deleted


# --- Alert rules, channels, incidents, deliveries --------------------------------------------

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


def rule_update(
    *,
    rule: AlertRule,
    actor: Actor,
    threshold: int | None = None,
    severity: str | None = None,
    enabled: bool | None = None,
) -> AlertRule:
    if threshold is not None and threshold < 0:
        raise MonitoringError(
            f"The threshold of {rule} must be 0 or more ({SPECS[rule.kind].threshold_means})."
        )
    if severity is not None and severity not in Severity.values:
        raise MonitoringError(f"Severity must be one of {', '.join(Severity.values)}.")
    before = {"threshold": rule.threshold, "severity": rule.severity, "enabled": rule.enabled}
    for key, value in {"threshold": threshold, "severity": severity, "enabled": enabled}.items():
        if value is not None:
            setattr(rule, key, value)
    rule.save()
    after = {"threshold": rule.threshold, "severity": rule.severity, "enabled": rule.enabled}
    audit_record(
        actor=actor,
        action=Action.ALERT_RULE_CHANGED,
        target=rule.kind,
        details={k: [before[k], after[k]] for k in after if before[k] != after[k]},
    )
    return rule


def _deliveries_queue(deliveries: list[Delivery]) -> None:
    ids = [d.pk for d in deliveries]
    for start in range(0, len(ids), 50):  # a storm of incidents becomes a few jobs, not thousands
        jobs.deliveries_send_job.delay(ids[start : start + 50])


def _deliveries_for(incidents: list[Incident], event: str) -> list[Delivery]:
    if not incidents:
        return []
    if event == Delivery.Event.TRIGGER:
        channels = list(Channel.objects.filter(enabled=True))
        rows = [
            Delivery(incident=i, channel=c, event=event)
            for i in incidents
            for c in channels
            if SEVERITY_RANK[i.severity] >= SEVERITY_RANK[c.min_severity]
        ]
    else:
        # Follow-ups go where the trigger went (acknowledgements skip e-mail: no one needs that mail).
        sent = (
            Delivery.objects.filter(incident__in=incidents, event=Delivery.Event.TRIGGER)
            .values_list("incident_id", "channel_id", "channel__kind")
            .distinct()
        )
        by_id = {i.pk: i for i in incidents}
        rows = [
            Delivery(incident=by_id[incident_id], channel_id=channel_id, event=event)
            for incident_id, channel_id, kind in sent
            if not (event == Delivery.Event.ACKNOWLEDGE and kind == Channel.Kind.EMAIL)
        ]
    created = Delivery.objects.bulk_create(rows, batch_size=1000)
    transaction.on_commit(lambda: _deliveries_queue(created))
    return created


@dataclass(frozen=True)
class EvaluationSummary:
    opened: int
    resolved: int
    firing: int
    unavailable: list[str]


def rules_ensure() -> None:
    """Create any built-in rule that has no row yet (a rule added in code, or a flushed table)."""
    existing = set(AlertRule.objects.values_list("kind", flat=True))
    AlertRule.objects.bulk_create(
        [
            AlertRule(kind=kind, threshold=spec.threshold, severity=spec.severity)
            for kind, spec in SPECS.items()
            if kind not in existing
        ],
        ignore_conflicts=True,
    )


def rules_evaluate(*, now: datetime | None = None) -> EvaluationSummary:
    """Evaluate every rule: open incidents for new findings, keep existing ones, resolve cleared ones."""
    now = now or timezone.now()
    connection.set_schema_to_public()
    rules_ensure()
    opened = resolved = firing = 0
    unavailable = []
    for rule in AlertRule.objects.all():
        open_incidents = {
            i.dedup_key: i for i in Incident.objects.filter(rule=rule, status__in=Incident.UNRESOLVED)
        }
        if not rule.enabled:
            resolved += len(_incidents_resolve(list(open_incidents.values()), by="rule disabled", now=now))
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_status="disabled")
            continue
        try:
            findings = EVALUATORS[rule.kind](rule, now)
        except SourceUnavailable as exc:
            unavailable.append(rule.kind)
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_status=str(exc)[:300])
            continue
        except Exception as exc:  # one broken rule must not silence the others
            logger.exception("alert rule %s failed", rule.kind)
            AlertRule.objects.filter(pk=rule.pk).update(
                last_evaluated_at=now, last_status=f"error: {type(exc).__name__}: {exc}"[:300]
            )
            continue
        found = {f"{rule.kind}:{f.key}": f for f in findings}
        with transaction.atomic():
            still = [i.pk for key, i in open_incidents.items() if key in found]
            Incident.objects.filter(pk__in=still).update(last_seen_at=now)
            new = Incident.objects.bulk_create(
                [
                    Incident(
                        rule=rule,
                        dedup_key=key[:255],
                        title=f.title[:300],
                        severity=rule.severity,
                        details=f.details,
                        tenant_id=f.tenant_id,
                        link=f.link,
                        opened_at=now,
                        last_seen_at=now,
                    )
                    for key, f in found.items()
                    if key not in open_incidents
                ],
                batch_size=1000,
            )
            _deliveries_for(new, Delivery.Event.TRIGGER)
            gone = [i for key, i in open_incidents.items() if key not in found]
            resolved += len(_incidents_resolve(gone, by="auto: condition cleared", now=now))
        opened += len(new)
        firing += len(found)
        AlertRule.objects.filter(pk=rule.pk).update(
            last_evaluated_at=now, last_status=f"firing: {len(found)}" if found else "ok"
        )
    return EvaluationSummary(opened, resolved, firing, unavailable)


def _incidents_resolve(incidents: list[Incident], *, by: str, now: datetime) -> list[Incident]:
    if not incidents:
        return []
    with transaction.atomic():
        Incident.objects.filter(pk__in=[i.pk for i in incidents]).update(
            status=Incident.Status.RESOLVED, resolved_at=now, resolved_by=by[:200]
        )
        for incident in incidents:
            incident.status, incident.resolved_at, incident.resolved_by = Incident.Status.RESOLVED, now, by
        _deliveries_for(incidents, Delivery.Event.RESOLVE)
    return incidents


def incident_acknowledge(*, incident: Incident, actor: Actor) -> Incident:
    if incident.status != Incident.Status.OPEN:
        raise MonitoringError(
            f"Incident #{incident.pk} is {incident.status}; only open incidents can be acknowledged."
        )
    with transaction.atomic():
        incident.status = Incident.Status.ACKNOWLEDGED
        incident.acknowledged_at, incident.acknowledged_by = timezone.now(), actor.name[:200]
        incident.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
        _deliveries_for([incident], Delivery.Event.ACKNOWLEDGE)
        audit_record(
            actor=actor,
            action=Action.INCIDENT_ACKNOWLEDGED,
            tenant=incident.tenant,
            target=incident.dedup_key,
            details={"incident": incident.pk},
        )
    return incident


def incident_resolve(*, incident: Incident, actor: Actor) -> Incident:
    """Resolve by hand; if the problem persists the next evaluation opens a new incident."""
    if incident.status == Incident.Status.RESOLVED:
        raise MonitoringError(f"Incident #{incident.pk} is resolved already.")
    with transaction.atomic():
        _incidents_resolve([incident], by=actor.name, now=timezone.now())
        audit_record(
            actor=actor,
            action=Action.INCIDENT_RESOLVED,
            tenant=incident.tenant,
            target=incident.dedup_key,
            details={"incident": incident.pk},
        )
    return incident


def delivery_send(*, delivery: Delivery) -> Delivery:
    """Send one delivery, retrying with exponential backoff; every attempt is recorded.

    A channel that stays down ends as `failed` with its last error; the incident is untouched.
    """
    if delivery.status == Delivery.Status.SENT:
        return delivery  # idempotent: a re-run job does not notify twice
    channel = delivery.channel
    message = message_for(delivery.incident, delivery.event)
    for attempt in range(settings.ALERT_DELIVERY_ATTEMPTS):
        if attempt:
            time.sleep(
                min(
                    settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** (attempt - 1),
                    settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS,
                )
            )
        delivery.attempts += 1
        try:
            secret = secret_decrypt(channel.secret_encrypted) if channel.secret_encrypted else ""
            delivery.response_code = send(channel, secret, message, delivery)
        except SendError as exc:
            delivery.last_error, delivery.response_code = str(exc)[:500], exc.code
            delivery.save(update_fields=["attempts", "last_error", "response_code"])
            continue
        except MonitoringError as exc:  # the secret cannot be read: retrying will not help
            delivery.last_error = str(exc)[:500]
            break
        delivery.status, delivery.delivered_at, delivery.last_error = Delivery.Status.SENT, timezone.now(), ""
        delivery.save(update_fields=["status", "delivered_at", "attempts", "response_code", "last_error"])
        return delivery
    delivery.status = Delivery.Status.FAILED
    delivery.save(update_fields=["status", "attempts", "last_error", "response_code"])
    logger.warning(
        "delivery %s to %s failed after %d attempt(s): %s",
        delivery.pk,
        channel.name,
        delivery.attempts,
        delivery.last_error,
    )
    return delivery


def alert_test_send(*, channel: Channel, actor: Actor) -> Delivery:
    delivery = Delivery.objects.create(channel=channel, event=Delivery.Event.TEST)
    delivery = delivery_send(delivery=delivery)
    audit_record(
        actor=actor,
        action=Action.CHANNEL_TEST_SENT,
        target=channel.name,
        details={"delivery": delivery.pk, "status": delivery.status, "error": delivery.last_error},
    )
    return delivery
