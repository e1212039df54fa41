"""RQ cron schedule, loaded by `manage.py rqcron platform_site/cron.py`.

Each job runs on the queue it was defined with (`core.jobs.job`); only the timing is set here.
"""

from django.conf import settings
from rq import cron

from api.jobs import api_reads_prune_job
from backups.jobs import (
    backup_platform_job,
    backup_prune_job,
    backup_schedule_job,
    dr_drill_job,
    offsite_prune_job,
    offsite_reverify_job,
    offsite_sweep_job,
    pitr_backup_job,
    pitr_status_job,
    restore_drill_job,
)
from deployments.jobs import aws_domains_sync_all_job, deployments_reap_job
from monitoring.jobs import probe_shops_job, rules_evaluate_job
from tenants.domains.jobs import certificates_due_job, verify_due_domains_job
from tenants.jobs import pool_refill_job, usage_refresh_job
from webhooks.jobs import certificates_expiring_job, deliveries_overdue_job, messages_prune_job


def every(job, **when) -> None:
    cron.register(job, queue_name=job.queue_name, **when)


# Tenancy: spare schemas for fast provisioning, usage against plan limits.
every(pool_refill_job, interval=300)
every(usage_refresh_job, cron="*/15 * * * *")
# Custom domains: verification backoff and re-checks, certificate renewal.
every(verify_due_domains_job, interval=60)
every(certificates_due_job, cron="17 * * * *")
# Backups: each tenant has its own slot within its plan's interval (staggered); the tick queues
# those whose slot has come (onto the "backups" queue). Platform daily, pruning hourly, a restore
# drill every week.
every(backup_schedule_job, interval=60)
every(backup_platform_job, cron="15 3 * * *")
every(backup_prune_job, cron="45 * * * *")
every(restore_drill_job, cron="30 4 * * 0")
# Off-site copies (a second store in another region): the sweep queues what is not copied yet and
# retries failures; a daily read-back of the copies checked longest ago; their own retention; the
# monthly disaster-recovery drill from the second store alone. All do nothing without a second store.
every(offsite_sweep_job, interval=60)
every(offsite_reverify_job, cron="10 5 * * *")
every(offsite_prune_job, cron="50 * * * *")
every(dr_drill_job, cron="0 5 1 * *")
# Continuous archive (pgBackRest; no-ops while PITR_STANZA is empty): the WAL streams by itself
# (archive_timeout); a full or differential backup daily, what pgBackRest lists every 5 minutes.
every(pitr_backup_job, cron="45 2 * * *")
every(pitr_status_job, cron="*/5 * * * *")
# The audit log: reads made with API keys are kept API_READ_AUDIT_RETENTION_DAYS (changes forever).
every(api_reads_prune_job, cron="25 3 * * *")
# Deployments: mark as failed what a dead worker left running.
every(deployments_reap_job, interval=120)
# AWS targets: certificates and records follow edge_changed; this heals drift made by hand.
every(aws_domains_sync_all_job, cron="41 * * * *")
# Monitoring: probes of every shop, then the alert rules.
every(probe_shops_job, interval=settings.PROBE_INTERVAL_SECONDS)
every(rules_evaluate_job, interval=settings.ALERT_EVALUATION_INTERVAL_SECONDS)
# Webhooks: re-queue retries a lost job or a worker without --with-scheduler left behind;
# certificate.expiring once per certificate; old messages and attempts pruned daily.
every(deliveries_overdue_job, interval=60)
every(certificates_expiring_job, cron="23 * * * *")
every(messages_prune_job, cron="50 3 * * *")
