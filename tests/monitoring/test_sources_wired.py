"""The alert rules' fact sources are wired, by default, to the backups, deployments and domains apps."""

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup
from monitoring.sources import BackupFact, source

pytestmark = pytest.mark.django_db(transaction=True)
OWN_SOURCES = {
    "certificates": "tenants.selectors.certificate_facts",
    "backups": "backups.selectors.backup_facts",
    "drills": "backups.selectors.drill_facts",
    "deployments": "deployments.selectors.deployment_facts",
}


def test_every_fact_source_is_configured_and_importable(db, settings):
    assert settings.MONITORING_SOURCES == OWN_SOURCES
    for name in ("certificates", "backups", "drills", "deployments"):
        assert callable(source(name))
    assert list(source("deployments")(timezone.now() - timedelta(days=1))) == []
    assert list(source("certificates")()) == []
    assert list(source("drills")()) == []


def test_backup_facts_report_each_active_tenants_newest_verified_backup(make_tenant):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    done = timezone.now() - timedelta(hours=2)
    Backup.objects.create(kind=Backup.Kind.TENANT, tenant=acme, status=Backup.Status.VERIFIED,
                          finished_at=done)
    Backup.objects.create(kind=Backup.Kind.TENANT, tenant=globex, status=Backup.Status.FAILED,
                          finished_at=timezone.now())
    facts = {f.tenant_id: f for f in source("backups")()}
    assert facts[str(acme.pk)] == BackupFact(str(acme.pk), done, timedelta(hours=1), facts[str(acme.pk)].link)
    assert facts[str(globex.pk)].last_success_at is None
