"""RQ cron schedule, loaded by `manage.py rqcron platform_site/cron.py`."""

from rq import cron

from deployments.jobs import deployments_reap_job
from tenants.jobs import pool_refill_job, usage_refresh_job

cron.register(pool_refill_job, queue_name="default", interval=300)
cron.register(usage_refresh_job, queue_name="long", cron="*/15 * * * *")
cron.register(deployments_reap_job, queue_name="default", interval=120)
