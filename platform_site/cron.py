"""RQ cron schedule, loaded by `manage.py rqcron platform_site/cron.py`."""

from rq import cron

from tenants.jobs import pool_refill_job, usage_refresh_job

cron.register(pool_refill_job, queue_name="default", interval=300)
cron.register(usage_refresh_job, queue_name="long", cron="*/15 * * * *")

# Custom domains: verification backoff and re-checks, certificate renewal (tenants/domain_jobs.py).
from tenants.domain_jobs import certificates_due_job, verify_due_domains_job  # noqa: E402

cron.register(verify_due_domains_job, queue_name="default", interval=60)
cron.register(certificates_due_job, queue_name="default", cron="17 * * * *")
