import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from core.models import AuditEvent
from monitoring.models import AlertRule, Channel, Incident
from monitoring.secrets import secret_decrypt
from tests.monitoring.dashboard_data import seed_dashboard

SLACK_URL = "https://hooks.slack.com/services/T0/B0/SUPERSECRETTOKEN"


@pytest.fixture
def staff(db):
    user = User.objects.create_superuser("ops", "ops@example.test", "pw-not-used")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_dashboard_shows_counts_probes_incidents_and_charts(staff, make_tenant, unwired_facts):
    seed_dashboard(make_tenant)
    page = staff.get("/admin/monitoring/statusdashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("<svg") >= 3 + 3 * 3  # three count charts, three charts per shop
    assert "<script" not in html.split('id="content-main"')[1]  # no JavaScript in the dashboard
    assert re.search(r"initech\.localhost</td><td>initech</td>\s*<td class=\"mon-bad\">down \(502\)", html)
    assert "acme.localhost is down" not in html
    assert "initech.localhost is down (3 failed probes in a row)" in html
    assert "Certificate for acme.localhost expires in 5.0 day(s)" in html
    assert "not available yet: no backups source registered" in html
    assert "No live worker" in html
    assert ">Suspended</text>" in html and ">Active</text>" in html


@pytest.mark.django_db
def test_channel_secret_is_write_only_in_the_admin(staff):
    add = staff.post("/admin/monitoring/channel/add/", {
        "name": "ops-slack", "kind": "slack", "enabled": "on", "min_severity": "warning", "target": "",
        "secret": SLACK_URL,
    })
    assert add.status_code == 302, add.content.decode()[-2000:]
    channel = Channel.objects.get()
    assert secret_decrypt(channel.secret_encrypted) == SLACK_URL
    for url in ("/admin/monitoring/channel/", f"/admin/monitoring/channel/{channel.pk}/change/"):
        html = staff.get(url).content.decode()
        assert "SUPERSECRETTOKEN" not in html and "hooks.slack.com" not in html
        assert channel.secret_hint in html
    # Saving without a secret keeps it; the audit trail never holds it.
    change = staff.post(f"/admin/monitoring/channel/{channel.pk}/change/", {
        "name": "ops-slack", "kind": "slack", "enabled": "on", "min_severity": "critical", "target": "",
        "secret": "",
    })
    assert change.status_code == 302
    assert secret_decrypt(Channel.objects.get().secret_encrypted) == SLACK_URL
    assert "SUPERSECRETTOKEN" not in str(list(AuditEvent.objects.values()))
    bad = staff.post("/admin/monitoring/channel/add/", {
        "name": "hook", "kind": "webhook", "enabled": "on", "min_severity": "warning",
        "target": "http://hooks.example.test/x", "secret": "short",
    })
    assert bad.status_code == 200
    assert "The webhook signing secret must be at least 16 characters long." in bad.content.decode()


@pytest.mark.django_db(transaction=True)
def test_rules_and_incidents_are_managed_through_services(staff, make_tenant):
    seed_dashboard(make_tenant)
    rule = AlertRule.objects.get(kind="shop_down")
    response = staff.post(f"/admin/monitoring/alertrule/{rule.pk}/change/", {
        "enabled": "on", "threshold": "5", "severity": "warning",
    })
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="alert_rule.changed").details == {
        "threshold": [3, 5], "severity": ["critical", "warning"]}
    incident = Incident.objects.get(dedup_key="shop_down:initech.localhost")
    staff.post("/admin/monitoring/incident/", {"action": "acknowledge", "_selected_action": [incident.pk]})
    incident.refresh_from_db()
    assert incident.status == "acknowledged" and incident.acknowledged_by == "ops"
    staff.post("/admin/monitoring/incident/", {"action": "resolve", "_selected_action": [incident.pk]})
    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.resolved_by == "ops"
    assert staff.get(f"/admin/monitoring/incident/{incident.pk}/change/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_channel_list_action_queues_a_test_alert(staff, receiver):
    import django_rq
    from django.test import override_settings

    from tenants.worker import TenantSafeSimpleWorker

    hook = receiver()
    staff.post("/admin/monitoring/channel/add/", {
        "name": "hook", "kind": "webhook", "enabled": "on", "min_severity": "warning",
        "target": f"{hook.url}/x", "secret": "0123456789abcdef-secret",
    })
    channel = Channel.objects.get()
    action = {"action": "send_test", "_selected_action": [channel.pk]}
    response = staff.post("/admin/monitoring/channel/", action, follow=True)
    assert "1 test alert(s) queued" in response.content.decode()
    with override_settings(PLATFORM_ADMIN_URL="https://admin.example.test"):
        django_rq.get_worker("default", worker_class=TenantSafeSimpleWorker).work(burst=True)
    assert hook.json()["event"] == "test"
    assert channel.deliveries.get().status == "sent"
    assert AuditEvent.objects.get(action="channel.test_sent").actor.startswith("job ")


@pytest.mark.django_db
def test_backup_sizes_chart_adds_up_verified_backups_per_day_and_kind(staff, make_tenant):
    from datetime import timedelta

    from django.utils import timezone

    from backups.models import Backup
    from backups.selectors import backup_sizes_by_day

    mib = 1024 * 1024
    shop = make_tenant("acme")
    now = timezone.now().replace(hour=12)
    for days_ago, kind, size, status in [
        (0, "tenant", 30 * mib, "verified"), (0, "tenant", 10 * mib, "verified"),
        (0, "platform", 5 * mib, "verified"), (1, "tenant", 25 * mib, "verified"),
        (1, "tenant", 900 * mib, "failed"), (40, "tenant", 20 * mib, "verified"),
    ]:
        at = now - timedelta(days=days_ago)
        Backup.objects.create(kind=kind, tenant=shop if kind == "tenant" else None, status=status,
                              size_bytes=size, created_at=at)
    rows = backup_sizes_by_day(since=now - timedelta(days=30))
    assert [(r.day, r.kind, r.count, r.total_bytes, r.largest_bytes) for r in rows] == [
        ((now - timedelta(days=1)).date(), "tenant", 1, 25 * mib, 25 * mib),
        (now.date(), "platform", 1, 5 * mib, 5 * mib),
        (now.date(), "tenant", 2, 40 * mib, 30 * mib),
    ]

    html = staff.get("/admin/monitoring/statusdashboard/").content.decode()
    card = html.split('id="mon-backup-sizes"')[1].split('<div class="mon-card"')[0]
    assert card.count("<rect") == 3 + 2  # three day segments, two legend keys
    assert f"<title>{now:%Y-%m-%d} tenant: 2 backup(s), 40.0\xa0MB</title>" in card
    assert f"<title>{now - timedelta(days=1):%Y-%m-%d} tenant: 1 backup(s), 25.0\xa0MB</title>" in card
    assert "4 backups kept, 70.0\xa0MB in all; today 45.0\xa0MB; largest single backup 30.0\xa0MB." in card


@pytest.mark.django_db
def test_backup_sizes_chart_says_when_there_is_nothing_yet(staff):
    html = staff.get("/admin/monitoring/statusdashboard/").content.decode()
    card = html.split('id="mon-backup-sizes"')[1].split('<div class="mon-card"')[0]
    assert "No data yet." in card and "<svg" not in card
