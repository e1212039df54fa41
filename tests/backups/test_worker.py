"""The backups queue's worker: no fork per job, and still one tenant per job, bounded, and strict."""

import django_rq
import pytest
from django.db import connection, transaction
from rq.job import Job

from backups.models import Backup
from backups.services.restore import restore_into_scratch
from backups.services.runs import backup_create
from backups.worker import connections_reset
from core.audit import Actor
from tests.backups.conftest import add_products, table_rows

ACTOR = Actor.command("pytest")
pytestmark = pytest.mark.django_db(transaction=True)


def restored_rows(backup: Backup, schema: str) -> list[tuple]:
    from backups import pgtools

    with pgtools.scratch_database("test") as scratch:
        restore_into_scratch(backup, scratch)
        return table_rows(schema, dbname=scratch)


def test_one_process_backs_up_tenant_after_tenant_each_from_its_own_schema(make_tenant, run_backup_worker):
    shops = [make_tenant(name) for name in ("acme", "bolt", "core")]
    for n, shop in enumerate(shops):
        add_products(shop.schema_name, 10 + n, f"{shop.subdomain}-")
    backups = [backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR) for shop in shops]
    jobs = django_rq.get_queue("backups").jobs
    assert len(jobs) == 3
    run_backup_worker()
    redis = django_rq.get_connection("backups")
    assert len({Job.fetch(job.id, connection=redis).worker_name for job in jobs}) == 1
    for n, (shop, backup) in enumerate(zip(shops, backups, strict=True)):
        backup.refresh_from_db()
        assert backup.status == Backup.Status.VERIFIED, backup.status_reason
        assert list(backup.manifest["tables"]) == [shop.schema_name]
        assert backup.manifest["tables"][shop.schema_name]["storefront_product"] == 10 + n
        assert restored_rows(backup, shop.schema_name) == table_rows(shop.schema_name)


def test_other_jobs_are_refused_and_the_worker_carries_on(make_tenant, run_backup_worker):
    shop = make_tenant("acme")
    stranger = django_rq.get_queue("backups").enqueue("tests.tenants.isolation_probe.product_names", "acme")
    backup = backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR)
    run_backup_worker()
    failed = Job.fetch(stranger.id, connection=django_rq.get_connection("backups"))
    assert failed.get_status() == "failed"
    assert "is not a backups job" in failed.latest_result().exc_string
    backup.refresh_from_db()
    assert backup.status == Backup.Status.VERIFIED


def test_the_worker_stops_after_a_job_once_over_its_memory_limit(make_tenant, run_backup_worker):
    first, second = make_tenant("acme"), make_tenant("bolt")
    for shop in (first, second):
        backup_create(kind=Backup.Kind.TENANT, tenant=shop, actor=ACTOR)
    result = run_backup_worker(BACKUP_WORKER_MAX_RSS_MB="1")
    assert "stops after this job (RSS" in result.stderr
    statuses = sorted(Backup.objects.values_list("status", flat=True))
    assert statuses == [Backup.Status.QUEUED, Backup.Status.VERIFIED]  # the job it ran finished first
    run_backup_worker()  # its supervisor's fresh worker picks up the rest
    assert set(Backup.objects.values_list("status", flat=True)) == {Backup.Status.VERIFIED}


def test_a_connection_left_inside_a_transaction_is_closed_between_jobs(db):
    from psycopg.pq import TransactionStatus

    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SET LOCAL search_path = pg_catalog")
    assert connection.connection.info.transaction_status == TransactionStatus.INTRANS
    assert connections_reset() is True
    assert connection.connection is None  # the next query opens a fresh one
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    with transaction.atomic():
        # Inside an atomic block it cannot be saved: the worker is told to stop instead.
        assert connections_reset() is False
