"""Audited API reads are kept API_READ_AUDIT_RETENTION_DAYS; changes and refusals stay."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from api.jobs import api_reads_prune_job
from api.services import api_reads_prune
from core.audit import Action, Actor, audit_record
from core.models import AuditEvent

ACTOR = Actor.command("pytest")


def record(action: str, days_ago: int) -> AuditEvent:
    event = audit_record(actor=ACTOR, action=action, target="/api/v1/tenants")
    AuditEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return event


@pytest.mark.django_db
@override_settings(API_READ_AUDIT_RETENTION_DAYS=30)
def test_old_reads_go_changes_and_recent_reads_stay_and_the_prune_is_audited():
    old_reads = [record(Action.API_READ, 31), record(Action.API_READ, 400)]
    recent = record(Action.API_READ, 29)
    old_change = record(Action.API_KEY_CREATED, 400)
    old_refusal = record(Action.API_ACCESS_DENIED, 400)

    assert api_reads_prune() == 2
    left = set(AuditEvent.objects.values_list("pk", flat=True))
    assert not {e.pk for e in old_reads} & left
    assert {recent.pk, old_change.pk, old_refusal.pk} <= left
    pruned = AuditEvent.objects.get(action=Action.API_READS_PRUNED)
    assert pruned.details["deleted"] == 2 and pruned.actor_type == "system"

    assert api_reads_prune_job() == 0  # nothing more to do: nothing deleted, nothing audited
    assert AuditEvent.objects.filter(action=Action.API_READS_PRUNED).count() == 1


@pytest.mark.django_db
@override_settings(API_READ_AUDIT_RETENTION_DAYS=1)
def test_a_big_backlog_goes_in_batches():
    for _ in range(5):
        record(Action.API_READ, 3)
    assert api_reads_prune(batch=2) == 2
    assert api_reads_prune(batch=10) == 3
    assert not AuditEvent.objects.filter(action=Action.API_READ).exists()
