"""RQ cron schedule, loaded by `manage.py rqcron platform_site/cron.py`."""

from django.conf import settings
from rq import cron

from monitoring.jobs import probe_shops_job, rules_evaluate_job
from tenants.jobs import pool_refill_job, usage_refresh_job

cron.register(pool_refill_job, queue_name="default", interval=300)
cron.register(usage_refresh_job, queue_name="long", cron="*/15 * * * *")
cron.register(probe_shops_job, queue_name="default", interval=settings.PROBE_INTERVAL_SECONDS)
cron.register(rules_evaluate_job, queue_name="default", interval=settings.ALERT_EVALUATION_INTERVAL_SECONDS)
