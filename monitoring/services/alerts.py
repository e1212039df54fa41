"""Alerting: rule settings, rule evaluation into incidents, acknowledge/resolve, deliveries."""

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.audit import Action, Actor, audit_record
from core.db import connection
from core.facts import SourceUnavailable
from monitoring import jobs  # it imports this module too: used at call time
from monitoring.errors import MonitoringError
from monitoring.models import SEVERITY_RANK, AlertRule, Channel, Delivery, Incident, Severity
from monitoring.notify import SendError, message_for, send
from monitoring.rules import EVALUATORS, SPECS
from monitoring.secrets import secret_decrypt

logger = logging.getLogger(__name__)

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
