"""RQ worker classes (settings.RQ["WORKER_CLASS"]): the tenant-safe workers, plus each job timed
into the shared job histogram (platform_rq_job_duration_seconds) and, when tracing is on, traced
as a span of its own (monitoring.tracing)."""

import logging
import time
from typing import TYPE_CHECKING

from monitoring import tracing
from monitoring.metrics import job_record
from tenants.worker import TenantSafeSimpleWorker, TenantSafeWorker

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    # Mixins for Worker subclasses: their perform_job() extends the worker's.
    from rq.worker import Worker as _WorkerMixin
else:
    _WorkerMixin = object


class _TimedJobs(_WorkerMixin):
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


class _TracedJobs(_WorkerMixin):
    def perform_job(self, job, queue) -> bool:
        if not tracing.enabled():
            return super().perform_job(job, queue)
        # A forked work horse ends with os._exit(): its spans must be exported before that.
        flush = getattr(self, "_is_horse", False)
        span = tracing.job_span(job_id=job.id, func_name=job.func_name, queue=queue.name, flush=flush)
        with span as finish:
            ok = super().perform_job(job, queue)
            finish(ok)
        return ok


class MetricsWorker(_TracedJobs, _TimedJobs, TenantSafeWorker):
    pass


class MetricsSimpleWorker(_TracedJobs, _TimedJobs, TenantSafeSimpleWorker):
    pass
