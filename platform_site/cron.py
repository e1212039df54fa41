"""RQ cron schedule, loaded by `manage.py rqcron platform_site/cron.py`."""

from django.conf import settings
from rq import cron

from backups.jobs import backup_platform_job, backup_prune_job, backup_schedule_job, restore_drill_job
from deployments.jobs import deployments_reap_job
from monitoring.jobs import probe_shops_job, rules_evaluate_job
from tenants.jobs import pool_refill_job, usage_refresh_job

cron.register(pool_refill_job, queue_name="default", interval=300)
cron.register(usage_refresh_job, queue_name="long", cron="*/15 * * * *")

# Custom domains: verification backoff and re-checks, certificate renewal (tenants/domain_jobs.py).
from tenants.domain_jobs import certificates_due_job, verify_due_domains_job  # noqa: E402

cron.register(verify_due_domains_job, queue_name="default", interval=60)
cron.register(certificates_due_job, queue_name="default", cron="17 * * * *")
# Backups: each tenant has its own slot within its plan's interval (staggered); the tick queues
# those whose slot has come (onto the "backups" queue). Platform daily, pruning hourly, a restore
# drill every week.
cron.register(backup_schedule_job, queue_name="default", interval=60)
cron.register(backup_platform_job, queue_name="backups", cron="15 3 * * *")
cron.register(backup_prune_job, queue_name="long", cron="45 * * * *")
cron.register(restore_drill_job, queue_name="long", cron="30 4 * * 0")
cron.register(deployments_reap_job, queue_name="default", interval=120)
cron.register(probe_shops_job, queue_name="default", interval=settings.PROBE_INTERVAL_SECONDS)
cron.register(rules_evaluate_job, queue_name="default", interval=settings.ALERT_EVALUATION_INTERVAL_SECONDS)
