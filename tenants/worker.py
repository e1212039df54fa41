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


class _PromptExit(_WorkerMixin):
    """RQ listens for commands in reads of up to 60 s, and redis-py 8 waits for the listening
    thread when it is stopped: now and then a leaving worker (a burst worker done, a warm
    shutdown) sat out a whole read, 60 s. Seen here 1 stop in 15; with one-second reads the
    worst of 40 was 1 s. The cost is one idle read a second.
    """

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # rq declares it None
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class TenantSafeWorker(_PromptExit, _PublicSchemaAroundJobs, Worker):
    pass


class TenantSafeSimpleWorker(_PromptExit, _PublicSchemaAroundJobs, SimpleWorker):
    pass
