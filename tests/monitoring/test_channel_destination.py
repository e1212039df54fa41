"""A channel's stored secret goes only where it was given for: changing the destination (target or
kind) needs the secret again in the same save, so nobody can redirect a PagerDuty key or webhook
signing secret to their own server and press "Send a test alert"."""

import pytest

from core.audit import Actor
from core.models import AuditEvent
from core.roles import OPERATORS
from monitoring.errors import MonitoringError
from monitoring.models import Channel
from monitoring.secrets import secret_decrypt
from monitoring.services import channels
from tests.staff import admin_client, admin_url, staff_user

ROUTING_KEY = "R0UT1NGKEY-0123456789abcdef0123"
ACTOR = Actor.command("pytest")


@pytest.fixture
def operator(db):
    return admin_client(staff_user("olivia", OPERATORS))


@pytest.fixture
def pagerduty(db):
    return channels.channel_create(
        name="pd", kind="pagerduty", target="https://events.pagerduty.test/v2/enqueue",
        secret=ROUTING_KEY, actor=ACTOR,
    )


def change(client, channel, **fields):
    data = {"name": channel.name, "kind": channel.kind, "enabled": "on",
            "min_severity": channel.min_severity, "target": channel.target, "secret": "", **fields}
    return client.post(admin_url("admin:monitoring_channel_change", channel.pk), data)


def test_pointing_a_channel_elsewhere_without_its_secret_is_refused(operator, pagerduty):
    events = AuditEvent.objects.count()
    response = change(operator, pagerduty, target="https://attacker.test/collect")
    assert response.status_code == 200
    assert "enter its secret again in the same save" in response.content.decode()
    stored = Channel.objects.get(pk=pagerduty.pk)
    assert stored.target == "https://events.pagerduty.test/v2/enqueue"
    assert secret_decrypt(stored.secret_encrypted) == ROUTING_KEY
    assert AuditEvent.objects.count() == events
    # Changing the kind is changing the destination too: a routing key is no webhook secret.
    response = change(operator, pagerduty, kind="webhook", target="https://attacker.test/hook")
    assert "enter its secret again" in response.content.decode()
    assert Channel.objects.get(pk=pagerduty.pk).kind == "pagerduty"


def test_a_new_destination_with_its_own_secret_is_saved(operator, pagerduty):
    new_key = "N3WK3Y-fedcba9876543210fedcba98"
    response = change(operator, pagerduty, target="https://events.eu.pagerduty.test/v2/enqueue",
                      secret=new_key)
    assert response.status_code == 302
    stored = Channel.objects.get(pk=pagerduty.pk)
    assert stored.target == "https://events.eu.pagerduty.test/v2/enqueue"
    assert secret_decrypt(stored.secret_encrypted) == new_key
    event = AuditEvent.objects.filter(action="channel.changed").latest("created_at")
    assert event.details == {"fields": ["target"], "secret_replaced": True}


def test_other_edits_keep_the_stored_secret(operator, pagerduty):
    assert change(operator, pagerduty, min_severity="critical").status_code == 302
    stored = Channel.objects.get(pk=pagerduty.pk)
    assert stored.min_severity == "critical" and secret_decrypt(stored.secret_encrypted) == ROUTING_KEY


def test_turning_a_channel_into_e_mail_drops_its_secret(operator, pagerduty):
    assert change(operator, pagerduty, kind="email", target="oncall@platform.test").status_code == 302
    stored = Channel.objects.get(pk=pagerduty.pk)
    assert stored.kind == "email" and stored.secret_encrypted == "" and stored.secret_hint == ""


def test_the_rule_holds_in_the_service_too(pagerduty):
    with pytest.raises(MonitoringError, match="enter its secret again"):
        channels.channel_update(channel=pagerduty, target="https://attacker.test/", actor=ACTOR)
    assert Channel.objects.get(pk=pagerduty.pk).target == "https://events.pagerduty.test/v2/enqueue"
