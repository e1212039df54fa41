from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from core.facts import BackupFact, DeploymentFact, DrillFact, fact_sources_replaced
from tests.monitoring import fact_sources

WIRED = fact_sources.WIRED


@pytest.fixture
def facts(make_tenant):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    fact_sources.FACTS.update(
        backups=[
            BackupFact(str(alpha.pk), fact_sources.hours_ago(3), timedelta(hours=1)),
            BackupFact(str(beta.pk), None, timedelta(hours=24)),
        ],
        drills=[DrillFact("alpha", fact_sources.hours_ago(2), False, "row counts differ")],
        deployments=[
            DeploymentFact("42", "production", "rolled_back", fact_sources.hours_ago(1)),
            DeploymentFact("41", "staging", "succeeded", fact_sources.hours_ago(5)),
        ],
    )
    yield alpha, beta
    for rows in fact_sources.FACTS.values():
        rows.clear()


@pytest.mark.django_db(transaction=True)
def test_fact_metrics_appear_once_sources_are_wired(client, facts, unwired_facts):
    def scrape() -> dict:
        text = client.get("/metrics", HTTP_HOST="localhost").content.decode()
        return {
            s.name + str(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    assert not any(k.startswith("platform_backup") for k in scrape())
    with fact_sources_replaced(WIRED):
        samples = scrape()
    assert 3 * 3600 - 60 < samples["platform_backup_age_seconds[('tenant', 'alpha')]"] < 3 * 3600 + 60
    assert samples["platform_backup_missing[('tenant', 'beta')]"] == 1
    assert samples["platform_restore_drill_ok[('scope', 'alpha')]"] == 0
    assert samples["platform_deployment_ok[('environment', 'production')]"] == 0
    assert samples["platform_deployment_ok[('environment', 'staging')]"] == 1
    assert samples["platform_metrics_source_up[('source', 'facts')]"] == 1


@pytest.mark.django_db(transaction=True)
def test_dashboard_shows_backups_drills_and_releases_once_wired(facts, unwired_facts):
    user = User.objects.create_superuser("ops", "ops@example.test", "pw-not-used")
    staff = Client(HTTP_HOST="localhost")
    staff.force_login(user)
    html = staff.get("/admin/monitoring/statusdashboard/").content.decode()
    assert "not available yet: no backups source registered" in html
    with fact_sources_replaced(WIRED):
        html = staff.get("/admin/monitoring/statusdashboard/").content.decode()
    backups = html.split('id="mon-backups"')[1].split('id="mon-drills"')[0]
    assert "2 <span" in backups and "of 2" in backups and "never" in backups and "alpha" in backups
    drills = html.split('id="mon-drills"')[1].split('id="mon-deployments"')[0]
    assert "alpha" in drills and "failed" in drills
    releases = html.split('id="mon-deployments"')[1].split('id="mon-shops"')[0]
    assert "production" in releases and "rolled_back" in releases and "staging" in releases
