"""RQ worker classes (settings.RQ["WORKER_CLASS"]): the tenant-safe workers, plus each job timed
into the shared job histogram (platform_rq_job_duration_seconds)."""

import logging
import time

from monitoring.metrics import job_record
from platform_site.rq_worker import TenantSafeSimpleWorker, TenantSafeWorker

logger = logging.getLogger(__name__)


class _TimedJobs:
    def perform_job(self, job, queue) -> bool:
        started = time.perf_counter()
        ok = super().perform_job(job, queue)
        try:
            job_record(
                self.connection, queue=queue.name, outcome="succeeded" if ok else "failed",
                seconds=time.perf_counter() - started,
            )
        except Exception:  # metrics must never fail a job
            logger.exception("could not record job metrics")
        return ok


class MetricsWorker(_TimedJobs, TenantSafeWorker):
    pass


class MetricsSimpleWorker(_TimedJobs, TenantSafeSimpleWorker):
    pass
