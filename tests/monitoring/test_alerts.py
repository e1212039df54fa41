import hashlib
import hmac
import json
from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from core.audit import Actor
from core.facts import BackupFact, DeploymentFact, DrillFact, fact_sources_replaced
from core.models import AuditEvent
from monitoring import secrets
from monitoring.errors import MonitoringError
from monitoring.migrations import __path__ as migrations_path
from monitoring.models import AlertRule, Channel, Delivery, Incident
from monitoring.rules import SPECS
from monitoring.services import alerts, channels
from tenants.worker import TenantSafeSimpleWorker
from tests.monitoring import fact_sources
from tests.monitoring.probe_data import record

ACTOR = Actor.command("pytest")
FAST = {
    "ALERT_DELIVERY_ATTEMPTS": 3,
    "ALERT_DELIVERY_BACKOFF_SECONDS": 0.01,
    "PLATFORM_ADMIN_URL": "https://admin.example.test",
    "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
}
WEBHOOK_SECRET = "whsec-0123456789abcdef"


def only_rules(*kinds: str) -> None:
    alerts.rules_ensure()  # transactional tests flush the rows the migration made
    AlertRule.objects.exclude(kind__in=kinds).update(enabled=False)


def work_queue() -> None:
    """Run the queued delivery jobs in this process (so the locmem mailbox sees the mail)."""
    queue = django_rq.get_queue("default")
    for job in queue.jobs:
        if not job.func_name.startswith("monitoring."):
            job.delete()  # provisioning's schema-pool refills: not what these tests are about
    django_rq.get_worker("default", worker_class=TenantSafeSimpleWorker).work(burst=True)


def probes(tenant, host: str, *results: bool) -> None:
    """Record probe rounds, oldest first; the last argument is the newest probe."""
    now = timezone.now()
    for age, ok in reversed(list(enumerate(reversed(results)))):
        record(tenant, host, ok=ok, at=now - timedelta(minutes=age))


def test_builtin_rules_match_their_specs():
    import importlib.util
    from pathlib import Path

    path = Path(migrations_path[0]) / "0002_builtin_rules.py"
    spec = importlib.util.spec_from_file_location("builtin_rules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.RULES) == set(SPECS) == set(AlertRule.Kind.values)
    assert all(module.RULES[k] == (s.threshold, s.severity) for k, s in SPECS.items())


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "sms", "target": ""}, "Unknown channel kind 'sms'"),
        ({"kind": "slack", "secret": ""}, "needs the Slack incoming-webhook URL"),
        ({"kind": "slack", "secret": "not a url"}, "must be the incoming-webhook URL"),
        ({"kind": "pagerduty", "secret": "short"}, "routing key looks wrong"),
        (
            {"kind": "pagerduty", "secret": "abcdefgh12345678", "target": "ftp://x"},
            "events URL must be an http",
        ),
        ({"kind": "webhook", "target": "http://hook.test/", "secret": "tiny"}, "at least 16 characters"),
        ({"kind": "webhook", "target": "hook.test", "secret": WEBHOOK_SECRET}, "needs its http(s) URL"),
        ({"kind": "email", "target": ""}, "needs recipients"),
        ({"kind": "email", "target": "ops@example.test, nope"}, "'nope' is not an e-mail address"),
        ({"kind": "email", "target": "ops@example.test", "secret": "x"}, "has no secret"),
    ],
)
def test_bad_channels_are_refused_with_what_to_fix(kwargs, message):
    with pytest.raises(MonitoringError, match=message.replace("(", r"\(").replace(")", r"\)")):
        channels.channel_create(name="ops", actor=ACTOR, **kwargs)
    assert not Channel.objects.exists()


@pytest.mark.django_db
def test_channel_secrets_are_encrypted_at_rest_and_only_hinted():
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
    channel = channels.channel_create(name="ops-slack", kind="slack", secret=url, actor=ACTOR)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM monitoring_channel WHERE id = %s", [channel.pk])
        row = " ".join(str(v) for v in cursor.fetchone())
    assert "SECRET" not in row and "hooks.slack.com" not in row
    assert channel.secret_hint == f"…XXXX ({len(url)} chars)"
    with pytest.raises(MonitoringError, match="exists already"):
        channels.channel_create(name="ops-slack", kind="slack", secret=url, actor=ACTOR)
    # Editing without a new secret keeps the old one; the audit trail says whether it changed.
    channels.channel_update(channel=channel, min_severity="critical", actor=ACTOR)
    assert secrets.secret_decrypt(Channel.objects.get().secret_encrypted) == url
    event = AuditEvent.objects.filter(action="channel.changed").get()
    assert event.details == {"fields": ["min_severity"], "secret_replaced": False}
    assert url not in json.dumps(list(AuditEvent.objects.values("details", "target")))
    # The platform's rotating keys: a new key in front still reads it; without the old key, it is gone.
    from cryptography.fernet import Fernet

    new_key = Fernet.generate_key().decode()
    with override_settings(PLATFORM_ENCRYPTION_KEYS=[new_key, *settings.PLATFORM_ENCRYPTION_KEYS]):
        assert secrets.secret_decrypt(channel.secret_encrypted) == url
        rotated = secrets.secret_encrypt(url)
    with override_settings(PLATFORM_ENCRYPTION_KEYS=[new_key]):
        assert secrets.secret_decrypt(rotated) == url
        with pytest.raises(MonitoringError, match="was a key removed.*enter the channel's secret again"):
            secrets.secret_decrypt(channel.secret_encrypted)


@pytest.mark.django_db(transaction=True)
def test_alert_loop_notifies_every_channel_once_and_resolves(make_tenant, receiver):
    slack, pagerduty, hook = receiver(), receiver(), receiver()
    channels.channel_create(name="slack", kind="slack", secret=f"{slack.url}/services/T/B/X", actor=ACTOR)
    channels.channel_create(
        name="pd",
        kind="pagerduty",
        target=f"{pagerduty.url}/v2/enqueue",
        secret="R0UTINGKEY0123456789abcdef012345",
        actor=ACTOR,
    )
    channels.channel_create(
        name="hook", kind="webhook", target=f"{hook.url}/alerts", secret=WEBHOOK_SECRET, actor=ACTOR
    )
    channels.channel_create(name="mail", kind="email", target="ops@example.test", actor=ACTOR)
    channels.channel_create(
        name="quiet",
        kind="email",
        target="boss@example.test",
        min_severity="critical",
        actor=ACTOR,
        enabled=False,
    )
    only_rules("shop_down")
    alpha = make_tenant("alpha")
    probes(alpha, "alpha.localhost", True, False, False, False)

    with override_settings(**FAST):
        summary = alerts.rules_evaluate()
        assert (summary.opened, summary.firing) == (1, 1)
        incident = Incident.objects.get()
        assert incident.dedup_key == "shop_down:alpha.localhost" and incident.severity == "critical"
        work_queue()
        link = f"https://admin.example.test/admin/monitoring/incident/{incident.pk}/change/"
        tenant_link = f"https://admin.example.test/admin/tenants/tenant/{alpha.pk}/change/"

        assert [r["path"] for r in slack.requests] == ["/services/T/B/X"]
        text = slack.json()["text"]
        assert text == "[CRITICAL] alpha.localhost is down (3 failed probes in a row): HTTP 502"
        assert slack.json()["attachments"][0]["title_link"] == link
        assert tenant_link in slack.json()["attachments"][0]["text"]

        event = pagerduty.json()
        assert pagerduty.requests[0]["path"] == "/v2/enqueue"
        assert event["routing_key"] == "R0UTINGKEY0123456789abcdef012345"
        assert (event["event_action"], event["dedup_key"]) == ("trigger", "shop_down:alpha.localhost")
        assert event["payload"]["severity"] == "critical" and event["payload"]["summary"] == incident.title
        assert event["links"][0]["href"] == link

        sent = hook.requests[0]
        expected = (
            "sha256="
            + hmac.new(
                WEBHOOK_SECRET.encode(),
                sent["headers"]["X-Platform-Timestamp"].encode() + b"." + sent["body"],
                hashlib.sha256,
            ).hexdigest()
        )
        assert hmac.compare_digest(sent["headers"]["X-Platform-Signature"], expected)
        assert (
            hook.json()["event"] == "trigger"
            and hook.json()["incident"]["key"] == "shop_down:alpha.localhost"
        )

        assert [m.to for m in mail.outbox] == [["ops@example.test"]]  # "quiet" is disabled
        assert mail.outbox[0].subject.startswith("[CRITICAL] alpha.localhost is down")
        assert link in mail.outbox[0].body

        # Still down: deduplicated, nobody is told twice.
        probes(alpha, "alpha.localhost", False)
        assert alerts.rules_evaluate().opened == 0
        work_queue()
        assert (len(slack.requests), len(pagerduty.requests), len(hook.requests), len(mail.outbox)) == (
            1,
            1,
            1,
            1,
        )
        assert Incident.objects.get().last_seen_at > incident.last_seen_at

        # Back up: resolved everywhere the trigger went.
        probes(alpha, "alpha.localhost", True)
        assert alerts.rules_evaluate().resolved == 1
        work_queue()
    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.resolved_by == "auto: condition cleared"
    assert slack.json()["text"].startswith("[RESOLVED] alpha.localhost is down")
    assert pagerduty.json() == {
        "routing_key": "R0UTINGKEY0123456789abcdef012345",
        "event_action": "resolve",
        "dedup_key": "shop_down:alpha.localhost",
    }
    assert hook.json()["event"] == "resolve" and hook.json()["incident"]["status"] == "resolved"
    assert mail.outbox[-1].subject.startswith("[RESOLVED]")
    deliveries = Delivery.objects.filter(incident=incident)
    assert deliveries.count() == 8 and set(deliveries.values_list("status", flat=True)) == {"sent"}
    assert set(deliveries.exclude(channel__kind="email").values_list("response_code", flat=True)) == {200}


@pytest.mark.django_db(transaction=True)
def test_deliveries_retry_with_backoff_and_a_dead_channel_keeps_the_incident(make_tenant, receiver, capsys):
    flaky, dead = receiver([500, 502]), receiver([503] * 10)
    channels.channel_create(name="flaky", kind="slack", secret=f"{flaky.url}/hook", actor=ACTOR)
    channels.channel_create(
        name="dead", kind="webhook", target=f"{dead.url}/hook", secret=WEBHOOK_SECRET, actor=ACTOR
    )
    with override_settings(**FAST):
        call_command("send_test_alert", "flaky")
        assert capsys.readouterr().out.strip() == "test alert sent to flaky (HTTP 200) after 3 attempt(s)"
        assert len(flaky.requests) == 3 and flaky.json()["text"].startswith("[TEST]")
        with pytest.raises(CommandError, match=r"test alert to dead failed after 3 attempt\(s\): HTTP 503"):
            call_command("send_test_alert", "dead")
        with pytest.raises(CommandError, match="No channel named 'nope' \\(channels: dead, flaky\\)"):
            call_command("send_test_alert", "nope")

        only_rules("shop_down")
        alpha = make_tenant("alpha")
        probes(alpha, "alpha.localhost", False, False, False)
        assert alerts.rules_evaluate().opened == 1, AlertRule.objects.values_list("kind", "last_status")
        work_queue()
    failed = Delivery.objects.get(channel__name="dead", event="trigger")
    assert (failed.status, failed.attempts, failed.response_code) == ("failed", 3, 503)
    assert failed.last_error.startswith("HTTP 503 from 127.0.0.1:")
    assert Delivery.objects.get(channel__name="flaky", event="trigger").status == "sent"
    assert Incident.objects.get().status == "open"
    assert AuditEvent.objects.filter(action="channel.test_sent").count() == 2


@pytest.mark.django_db(transaction=True)
def test_acknowledge_and_manual_resolve(make_tenant, receiver):
    pagerduty = receiver()
    channels.channel_create(
        name="pd",
        kind="pagerduty",
        target=f"{pagerduty.url}/v2/enqueue",
        secret="R0UTINGKEY0123456789abcdef012345",
        actor=ACTOR,
    )
    channels.channel_create(name="mail", kind="email", target="ops@example.test", actor=ACTOR)
    only_rules("shop_down")
    alpha = make_tenant("alpha")
    probes(alpha, "alpha.localhost", False, False, False)
    with override_settings(**FAST):
        alerts.rules_evaluate()
        incident = Incident.objects.get()
        alerts.incident_acknowledge(incident=incident, actor=ACTOR)
        with pytest.raises(MonitoringError, match="only open incidents can be acknowledged"):
            alerts.incident_acknowledge(incident=incident, actor=ACTOR)
        work_queue()
        assert [r["event_action"] for r in map(json.loads, (r["body"] for r in pagerduty.requests))] == [
            "trigger",
            "acknowledge",
        ]
        assert len(mail.outbox) == 1  # no e-mail for an acknowledgement
        # Acknowledged incidents stay deduplicated.
        assert alerts.rules_evaluate().opened == 0
        alerts.incident_resolve(incident=incident, actor=ACTOR)
        with pytest.raises(MonitoringError, match="resolved already"):
            alerts.incident_resolve(incident=incident, actor=ACTOR)
        work_queue()
        assert pagerduty.json()["event_action"] == "resolve"
        assert mail.outbox[-1].subject.startswith("[RESOLVED]")
        # Still down after a manual resolve: a fresh incident opens on the next evaluation.
        assert alerts.rules_evaluate().opened == 1
    assert Incident.objects.filter(status="resolved").get().resolved_by.startswith("pytest")
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"incident.acknowledged", "incident.resolved"} <= actions


@pytest.mark.django_db(transaction=True)
def test_rules_without_their_source_say_not_available_yet_then_work_when_wired(
    make_tenant, unwired_facts
):
    only_rules("backup_stale", "restore_drill_failed", "deployment_failed", "certificate_expiring")
    summary = alerts.rules_evaluate()
    assert sorted(summary.unavailable) == ["backup_stale", "deployment_failed", "restore_drill_failed"]
    status = dict(AlertRule.objects.values_list("kind", "last_status"))
    assert status["backup_stale"] == (
        "not available yet: no backups source registered (its app is not installed)"
    )
    assert status["certificate_expiring"] == "ok"  # works from the probes alone
    assert not Incident.objects.exists()

    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    hour = timedelta(hours=1)
    fact_sources.FACTS.update(
        backups=[
            BackupFact(str(alpha.pk), fact_sources.hours_ago(3), hour),
            BackupFact(str(beta.pk), fact_sources.hours_ago(0.5), hour),
        ],
        drills=[
            DrillFact("alpha", fact_sources.hours_ago(2), False, "row counts differ"),
            DrillFact("whole-database", fact_sources.hours_ago(2), True),
        ],
        deployments=[
            DeploymentFact("42", "production", "rolled_back", fact_sources.hours_ago(1), "health check"),
            DeploymentFact("41", "staging", "succeeded", fact_sources.hours_ago(1)),
        ],
    )
    wired = fact_sources.WIRED
    try:
        with fact_sources_replaced(wired):
            assert alerts.rules_evaluate().unavailable == []
            with fact_sources_replaced({"backups": None}):
                alerts.rules_evaluate()
                assert AlertRule.objects.get(kind="backup_stale").last_status.startswith(
                    "not available yet: no backups source registered"
                )
                assert Incident.objects.filter(rule__kind="backup_stale", status="open").count() == 1  # kept
    finally:
        for facts in fact_sources.FACTS.values():
            facts.clear()
    titles = dict(Incident.objects.values_list("dedup_key", "title"))
    assert titles == {
        f"backup_stale:{alpha.pk}": "Newest backup is 3.0 h old (RPO 1 h)",
        "restore_drill_failed:alpha": "Restore drill of alpha failed: row counts differ",
        "deployment_failed:production": "Deployment 42 to production rolled back: health check",
    }


@pytest.mark.django_db(transaction=True)
def test_queue_and_worker_rules(run_worker):
    only_rules("queue_backlog", "failed_jobs", "worker_missing")
    AlertRule.objects.filter(kind="queue_backlog").update(threshold=2)
    queue = django_rq.get_queue("long")
    queue.enqueue("monitoring.health.no_such_function")
    run_worker("long")
    for _ in range(3):
        queue.enqueue("tenants.jobs.usage_refresh_job")
    alerts.rules_evaluate()
    assert set(Incident.objects.values_list("dedup_key", flat=True)) == {
        "queue_backlog:long",
        "failed_jobs:long",
        "worker_missing:default",
        "worker_missing:long",
        "worker_missing:backups",
    }
    assert (
        Incident.objects.get(dedup_key="worker_missing:long").title
        == "0 live worker(s) on queue 'long', need 1"
    )
    run_worker("long")
    from rq.registry import FailedJobRegistry

    for job_id in FailedJobRegistry(queue=queue).get_job_ids():
        FailedJobRegistry(queue=queue).remove(job_id, delete_job=True)
    alerts.rules_evaluate()
    open_keys = set(Incident.objects.filter(status="open").values_list("dedup_key", flat=True))
    assert open_keys == {"worker_missing:default", "worker_missing:long", "worker_missing:backups"}


@pytest.mark.django_db
def test_rule_thresholds_are_validated_and_audited():
    alerts.rules_ensure()
    rule = AlertRule.objects.get(kind="certificate_expiring")
    alerts.rule_update(rule=rule, threshold=21, severity="critical", actor=ACTOR)
    assert AuditEvent.objects.get(action="alert_rule.changed").details == {
        "threshold": [14, 21],
        "severity": ["warning", "critical"],
    }
    with pytest.raises(MonitoringError, match="Severity must be one of critical, warning, info"):
        alerts.rule_update(rule=rule, severity="panic", actor=ACTOR)
    with pytest.raises(MonitoringError, match="0 or more \\(days before expiry\\)"):
        alerts.rule_update(rule=rule, threshold=-1, actor=ACTOR)


@pytest.mark.django_db(transaction=True)
def test_a_shop_younger_than_its_rpo_is_not_missing_a_backup_yet(make_tenant):
    only_rules("backup_stale")
    new, old = make_tenant("newshop"), make_tenant("oldshop")
    hour = timedelta(hours=1)
    fact_sources.FACTS["backups"][:] = [
        BackupFact(str(new.pk), None, hour, active_since=fact_sources.hours_ago(0.1)),
        BackupFact(str(old.pk), None, hour, active_since=fact_sources.hours_ago(3)),
    ]
    try:
        with fact_sources_replaced(fact_sources.WIRED):
            alerts.rules_evaluate()
    finally:
        fact_sources.FACTS["backups"].clear()
    assert dict(Incident.objects.values_list("dedup_key", "title")) == {
        f"backup_stale:{old.pk}": "Tenant has no good backup"
    }
