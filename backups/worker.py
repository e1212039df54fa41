"""The worker of the ``backups`` queue: runs its jobs in its own process, no fork per job.

RQ's default worker forks a work horse per job. For a small tenant that fork, the horse's fresh
database connections and its cold caches (the pg_dump version check) cost about as much as the
dump itself. This worker keeps one process between jobs, and keeps that safe:

- only ``backups.jobs.*`` run here: known code that picks its schema and cleans up after itself;
  any other job on this queue fails with a message, without running;
- every job starts and ends in the public schema (the tenant-safe worker), on a Django connection
  that is neither inside a transaction nor broken: such a connection is closed, and the next query
  opens a fresh one;
- after a job, if the process holds more than ``BACKUP_WORKER_MAX_RSS_MB`` it stops (warm), for its
  supervisor to start a fresh one: memory stays bounded however long it runs (``--max-jobs`` works
  too);
- a killed worker takes its job down with it: the backup stops sending heartbeats and the reaper
  marks it failed and aborts its upload, as with the forking worker; a cold shutdown (a second
  SIGTERM) fails the backup and aborts its upload at once.
"""

import os

from django.conf import settings
from django.db import close_old_connections, connections, reset_queries
from psycopg.pq import TransactionStatus

from monitoring.worker import MetricsSimpleWorker

ALLOWED_JOBS_PREFIX = "backups.jobs."


class JobNotAllowed(Exception):
    pass


def connections_reset() -> bool:
    """Leave Django's connections as a new request finds them; False if one cannot be saved.

    A connection left inside a transaction (a raw BEGIN, a failed statement) is closed; one inside
    an atomic block cannot be closed safely (Django would refuse every later query on it).
    """
    opened = connections.all(initialized_only=True)
    if any(conn.in_atomic_block for conn in opened):
        return False
    for conn in opened:
        if conn.connection is not None and conn.connection.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
    reset_queries()
    close_old_connections()  # broken ones, and those past CONN_MAX_AGE
    return True


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux), or None where /proc is not available."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class BackupWorker(MetricsSimpleWorker):
    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        # Raised inside RQ's perform_job: the job is recorded as failed with this message.
        if not (job.func_name or "").startswith(ALLOWED_JOBS_PREFIX):
            raise JobNotAllowed(
                f"{job.func_name} is not a backups job; the backups queue runs only "
                f"{ALLOWED_JOBS_PREFIX}* (enqueue other work on 'default' or 'long')."
            )

    def execute_job(self, job, queue) -> None:
        healthy = connections_reset()
        try:
            super().execute_job(job, queue)
        finally:
            healthy = connections_reset() and healthy
            self._stop_if_unfit(healthy)

    def _stop_if_unfit(self, healthy: bool) -> None:
        limit = settings.BACKUP_WORKER_MAX_RSS_MB * 1024 * 1024
        rss = resident_bytes()
        if not healthy:
            reason = "a job left a database transaction open"
        elif limit > 0 and rss is not None and rss > limit:
            reason = f"RSS {rss / 1048576:.0f} MB is over BACKUP_WORKER_MAX_RSS_MB"
        else:
            return
        # Checked at the top of RQ's work loop: the worker exits cleanly, its supervisor restarts it.
        self.log.warning("Worker %s stops after this job (%s); a fresh one takes over.", self.name, reason)
        self._stop_requested = True
