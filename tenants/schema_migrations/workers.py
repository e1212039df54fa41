"""The forked worker processes that migrate a run's remaining schemas, and collecting their results.

Worker processes are forked after the groups are planned; each starts on connections of its own
and migrates chunks of (group index, schema) tasks with migrate_schema.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from asgiref.local import Local
from django.db import connections

from core.db import connection
from tenants.schema_migrations.per_schema import _error_text, migrate_schema
from tenants.schema_migrations.planning import _Group, _GroupRuntime
from tenants.schema_migrations.targets import MigrateReport, SchemaResult, SchemaTarget

_Finish = Callable[[SchemaResult], None]


# Worker processes are forked after the groups are planned and get them (with their rendered
# states) as the pool initializer's argument: with the fork start method nothing is pickled, the
# child holds the parent's objects. A task names a group by index and a schema.
_worker_groups: list[_Group] = []  # set in a forked worker only, by _worker_init

_INHERITED_CONNECTIONS: list = []


def _worker_init(groups: list[_Group]) -> None:
    """Start a forked worker with the planned groups, on connections of its own.

    The parent closed the connections it can see, but Django keeps them per thread and per async
    context: after a fork the child may find one the parent could not close (one opened before
    an event loop ran in that thread, for instance), whose socket the parent still uses. The old
    ones stay referenced, never closed or collected (a worker ends with os._exit), so that no
    finalizer says goodbye to the server on the parent's behalf.
    """
    _worker_groups[:] = groups
    # ConnectionHandler._connections is private (docs/migrations.md lists it).
    _INHERITED_CONNECTIONS.append(connections._connections)  # type: ignore[attr-defined]
    connections._connections = Local(connections.thread_critical)  # type: ignore[attr-defined]


def _migrate_task(groups: list[_Group], group_index: int, target: SchemaTarget) -> SchemaResult:
    group = groups[group_index]
    try:
        if group.runtime is None:
            group.runtime = _GroupRuntime(group)
        return migrate_schema(group.runtime, target, replay=group.replay_sql)
    except Exception as exc:
        return SchemaResult(target.name, target.kind, "failed", error=_error_text(exc))


def _worker_chunk(chunk: list[tuple[int, SchemaTarget]]) -> list[SchemaResult]:
    return [_migrate_task(_worker_groups, index, target) for index, target in chunk]


def _collect(groups: list[_Group], tasks: list[tuple[int, SchemaTarget]], report: MigrateReport,
             finish: _Finish, *, workers: int) -> None:
    """Second half: migrate the tasks here, or in forked workers, and collect their results."""
    if not tasks:
        return
    use_workers = min(workers, len(tasks))
    forkable = "fork" in multiprocessing.get_all_start_methods()
    if use_workers <= 1 or not forkable or connection.in_atomic_block:
        for index, target in tasks:
            finish(_migrate_task(groups, index, target))
        return
    report.workers = use_workers
    # Children must open their own connections; never share a socket across a fork.
    connections.close_all()

    size = max(1, min(16, len(tasks) // (use_workers * 8)))
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    # A pool that notices a dead worker (OOM kill...): its schemas are reported, never awaited.
    pool = ProcessPoolExecutor(
        use_workers, mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init, initargs=(groups,),
    )
    futures = {pool.submit(_worker_chunk, chunk): chunk for chunk in chunks}
    try:
        for future in as_completed(futures):
            try:
                results = future.result()
            except BrokenProcessPool:
                error = "a worker process died while migrating it; run migrate_schemas again"
                results = [SchemaResult(t.name, t.kind, "failed", error=error) for _, t in futures[future]]
            for result in results:
                finish(result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown()
