"""The fact sources are registered by the apps that own the facts: backups, deployments, tenants."""

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup
from backups.offsite_selectors import offsite_facts
from backups.pitr.selectors import wal_archive_facts
from backups.selectors import backup_facts, backup_sizes_by_day, drill_facts
from core.facts import FACT_SOURCES, BackupFact
from core.facts import fact_source as source
from deployments.selectors import deployment_facts
from tenants.selectors import certificate_facts

pytestmark = pytest.mark.django_db(transaction=True)
OWN_SOURCES = {
    "certificates": certificate_facts,
    "backups": backup_facts,
    "drills": drill_facts,
    "deployments": deployment_facts,
    "backup_sizes": backup_sizes_by_day,
    "offsite": offsite_facts,
    "wal_archive": wal_archive_facts,
}


def test_every_fact_source_is_registered_by_its_app(db):
    assert set(OWN_SOURCES) == set(FACT_SOURCES)
    for name, function in OWN_SOURCES.items():
        assert source(name) is function
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
    acme.refresh_from_db()
    assert facts[str(acme.pk)] == BackupFact(
        str(acme.pk), done, timedelta(hours=1), facts[str(acme.pk)].link, acme.activated_at
    )
    assert acme.activated_at is not None
    assert facts[str(globex.pk)].last_success_at is None
