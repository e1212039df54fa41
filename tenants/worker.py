"""RQ workers that start and end every job in the public schema.

A worker runs jobs for many tenants one after another on one database connection; resetting the
schema around each job means a job that forgets to pick its tenant reads the public schema, never
the previous job's tenant.
"""

from typing import TYPE_CHECKING

from rq.worker import SimpleWorker, Worker

from core.db import connection

if TYPE_CHECKING:
    # A mixin for Worker subclasses: perform_job() extends theirs.
    _WorkerMixin = Worker
else:
    _WorkerMixin = object


class _PublicSchemaAroundJobs(_WorkerMixin):
    def perform_job(self, job, queue):
        connection.set_schema_to_public()
        try:
            return super().perform_job(job, queue)
        finally:
            connection.set_schema_to_public()


class TenantSafeWorker(_PublicSchemaAroundJobs, Worker):
    pass


class TenantSafeSimpleWorker(_PublicSchemaAroundJobs, SimpleWorker):
    pass
