"""The continuous archive without a cluster: configuration, refusals that need no restore, the
platform RPO in /metrics and its alert rule, the console (tenant page, dashboard). The restores
themselves run against a real archiving cluster in test_pitr.py."""

from datetime import UTC, datetime, timedelta

import django_rq
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backups.errors import BackupError
from backups.models import PitrBackup
from backups.pitr import config
from backups.pitr.services import moment_parse, restore_moment_check
from core.facts import WalArchiveFact, fact_sources_replaced
from monitoring.models import AlertRule, Incident
from monitoring.services import alerts


@pytest.fixture
def pitr_on(settings, tmp_path):
    settings.PITR_STANZA = "platform"
    settings.PITR_PG_DATA = "/var/lib/postgresql/15/main"
    settings.PITR_REPO1 = "s3://bucket-a/pgbackrest?endpoint=https://s3.example.test:9443&region=eu-west-1"
    settings.PITR_REPO2 = "/srv/pgbackrest"
    settings.PITR_CONFIG_PATH = str(tmp_path / "pgbackrest.conf")
    settings.BACKUP_S3_ACCESS_KEY_ID = "AKIDEXAMPLE"
    settings.BACKUP_S3_SECRET_ACCESS_KEY = "secret-example"
    return settings


def test_config_names_both_repositories_and_the_cluster(pitr_on, db):
    text = config.render()
    for line in (
        "repo1-type=s3",
        "repo1-s3-bucket=bucket-a",
        "repo1-s3-endpoint=s3.example.test",
        "repo1-storage-port=9443",
        "repo1-s3-region=eu-west-1",
        "repo2-type=posix",
        "repo2-path=/srv/pgbackrest",
        "[platform]",
        "pg1-path=/var/lib/postgresql/15/main",
    ):
        assert line in text.splitlines(), line
    assert config.archive_command() == (
        f"pgbackrest --config={pitr_on.PITR_CONFIG_PATH} --stanza=platform archive-push %p"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("relative/folder", "absolute path"),
        ("s3://bucket/p?endpoint=http://insecure:9000", "over TLS only"),
        ("ftp://somewhere/x", "use /absolute/folder or s3://"),
    ],
)
def test_bad_repositories_are_refused_with_what_to_write(value, message):
    with pytest.raises(BackupError, match=message):
        config.repo_parse(1, value)


def test_moments_are_read_as_written_or_refused():
    assert moment_parse("2026-12-04 14:03:00+00") == datetime(2026, 12, 4, 14, 3, tzinfo=UTC)
    assert moment_parse("2026-12-04T14:03:00") == datetime(2026, 12, 4, 14, 3, tzinfo=UTC)  # UTC if no zone
    with pytest.raises(BackupError, match="is not a moment"):
        moment_parse("yesterday at noon")


def test_moments_outside_the_window_are_refused(pitr_on, db, settings):
    now = timezone.now()
    with pytest.raises(BackupError, match="No pgBackRest backup has succeeded yet"):
        restore_moment_check(to_time=now - timedelta(minutes=5))
    PitrBackup.objects.create(type="full", status="succeeded", label="x", stopped_at=now - timedelta(hours=2))
    with pytest.raises(BackupError, match="in the future"):
        restore_moment_check(to_time=now + timedelta(minutes=5))
    with pytest.raises(BackupError, match="before the oldest backup"):
        restore_moment_check(to_time=now - timedelta(hours=3))
    assert restore_moment_check(to_time=now - timedelta(hours=1)).start == now - timedelta(hours=2)
    settings.PITR_STANZA = ""
    with pytest.raises(BackupError, match="continuous archive is off"):
        restore_moment_check(to_time=now - timedelta(hours=1))


def _scrape(client) -> dict:
    text = client.get("/metrics", HTTP_HOST="localhost").content.decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.django_db(transaction=True)
def test_platform_rpo_is_in_metrics_and_alerted_past_60_seconds(client):
    facts = [WalArchiveFact(True, 12.0, False, "last archived 0000000100000000000000A1")]
    with fact_sources_replaced({"wal_archive": lambda: facts}):
        samples = _scrape(client)
        assert samples["platform_wal_archive_age_seconds"] == 12.0
        assert samples["platform_wal_archive_failing"] == 0
        alerts.rules_evaluate()
        assert not Incident.objects.filter(rule__kind=AlertRule.Kind.WAL_ARCHIVE_STALE).exists()
        facts[0] = WalArchiveFact(True, 95.0, False, "last archived 0000000100000000000000A1")
        alerts.rules_evaluate()
        incident = Incident.objects.get(rule__kind=AlertRule.Kind.WAL_ARCHIVE_STALE, status="open")
        assert incident.title == "Platform data at risk: 95 s of WAL not archived (RPO 60 s)"
        facts[0] = WalArchiveFact(True, 0.0, False, "all archived")
        alerts.rules_evaluate()
        incident.refresh_from_db()
        assert incident.status == "resolved"
        facts[0] = WalArchiveFact(True, 3.0, True, "archiving 0000000100000000000000A2 failed")
        alerts.rules_evaluate()
        assert Incident.objects.get(
            rule__kind=AlertRule.Kind.WAL_ARCHIVE_STALE, status="open"
        ).title.startswith("Platform WAL archiving fails")


def test_a_configured_archive_on_a_server_that_does_not_archive_is_reported(pitr_on, db):
    from backups.pitr.selectors import wal_archive_facts

    [fact] = wal_archive_facts()  # the test server runs with archive_mode off
    assert not fact.configured and "archive_mode is off" in fact.detail


@pytest.fixture
def operator_client(db):
    from django.contrib.auth.models import Group

    from core.roles import OPERATORS, SUPPORT, roles_sync

    roles_sync()
    made = {}
    for name, group in (("op", OPERATORS), ("sup", SUPPORT)):
        user = User.objects.create_user(name, f"{name}@example.test", "pw-not-used", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        made[name] = Client(HTTP_HOST="localhost")
        made[name].force_login(user)
    return made


def test_tenant_page_offers_a_moment_within_the_window_and_queues_only_good_requests(
    pitr_on, operator_client, make_tenant, django_capture_on_commit_callbacks
):
    shop = make_tenant("momentshop")
    operator, support = operator_client["op"], operator_client["sup"]
    page = operator.get(f"/admin/tenants/tenant/{shop.pk}/change/").content.decode()
    url = f"/admin/backups/pitrbackup/restore-tenant/{shop.pk}/"
    assert url in page
    assert url not in support.get(f"/admin/tenants/tenant/{shop.pk}/change/").content.decode()
    assert support.get(url).status_code == 403

    oldest = timezone.now() - timedelta(hours=1)
    PitrBackup.objects.create(type="full", status="succeeded", label="f1", stopped_at=oldest)
    form = operator.get(url).content.decode()
    assert "Recoverable window" in form and oldest.strftime("%Y-%m-%d %H:%M:%S") in form
    queue = django_rq.get_queue("long")
    refusals = [
        (
            {
                "moment": (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "mode": "in_place",
                "confirm": "momentshop",
            },
            "in the future",
        ),
        (
            {
                "moment": (oldest - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "mode": "in_place",
                "confirm": "momentshop",
            },
            "before the oldest backup",
        ),
        ({"moment": "not a time", "mode": "in_place", "confirm": "momentshop"}, "is not a moment"),
        (
            {"moment": timezone.now().strftime("%Y-%m-%dT%H:%M:%S"), "mode": "in_place", "confirm": "x"},
            "does not match",
        ),
        (
            {
                "moment": timezone.now().strftime("%Y-%m-%dT%H:%M:%S"),
                "mode": "as_new",
                "new_subdomain": "momentshop",
                "confirm": "momentshop",
            },
            "is taken",
        ),
    ]
    for data, message in refusals:
        with django_capture_on_commit_callbacks(execute=True):
            response = operator.post(url, data)
        assert response.status_code == 200 and message in response.content.decode(), message
    assert queue.count == 0

    moment = (timezone.now() - timedelta(minutes=10)).replace(microsecond=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            url, {"moment": moment.strftime("%Y-%m-%dT%H:%M:%S"), "mode": "in_place", "confirm": "momentshop"}
        )
    assert response.status_code == 302
    [job] = queue.jobs
    assert job.func_name == "backups.jobs.pitr_restore_tenant_job"
    assert job.args[:4] == (str(shop.pk), moment.isoformat(), "", "momentshop")


def test_backups_dashboard_shows_the_continuous_archive(pitr_on, operator_client):
    PitrBackup.objects.create(type="full", status="succeeded", label="f1", stopped_at=timezone.now())
    PitrBackup.objects.create(type="diff", status="failed", status_reason="repository unreachable")
    html = operator_client["sup"].get("/admin/backups/backup/").content.decode()
    assert "Continuous archive (pgBackRest)" in html and "recoverable from" in html
    listing = operator_client["sup"].get("/admin/backups/pitrbackup/").content.decode()
    assert "f1" in listing and "Failed" in listing
