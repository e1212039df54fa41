"""Jobs are bound to their queue where they are defined, not by their callers."""

from collections.abc import Callable
from typing import Any

from django_rq import job as rq_job


def job(queue: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """django-rq's ``@job`` on ``queue`` (callers use ``.delay(...)``, enqueued on commit).

    The function also keeps ``queue_name``, so the cron schedule and batch enqueues
    (``Queue.enqueue_many``) use the queue the job was defined with.
    """

    def bind(func: Callable[..., Any]) -> Any:
        # Any: django-rq's job type does not declare the attribute added here.
        bound: Any = rq_job(queue, **options)(func)
        bound.queue_name = queue
        return bound

    return bind
