"""Readiness checks: the database, Redis and the RQ workers. Each returns a CheckResult."""

import time
from dataclasses import asdict, dataclass

import redis
from django.conf import settings
from rq import Worker

from core.db import connection


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def redis_client() -> redis.Redis:
    """The RQ Redis, with short timeouts so a dead server fails a probe quickly."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    return redis.Redis.from_url(
        settings.RQ_QUEUES["default"]["URL"], socket_connect_timeout=timeout, socket_timeout=timeout
    )


def _timed(name: str, check) -> CheckResult:
    started = time.perf_counter()
    try:
        ok, detail = check()
    except Exception as exc:  # a probe reports failures, it does not raise them
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    return CheckResult(name, ok, detail, round((time.perf_counter() - started) * 1000, 1))


def _database() -> tuple[bool, str]:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return True, "ok"


def _redis() -> tuple[bool, str]:
    redis_client().ping()
    return True, "ok"


def _workers() -> tuple[bool, str]:
    workers = Worker.all(connection=redis_client())
    queues = {q for w in workers for q in w.queue_names()}
    required = settings.READYZ_MIN_WORKERS
    missing = [q for q in settings.RQ_QUEUES if required and q not in queues]
    if len(workers) < required or missing:
        return False, (
            f"{len(workers)} worker(s) alive, need {required}"
            + (f"; no worker listens on {', '.join(missing)}" if missing else "")
            + " (start `manage.py rqworker default long` and the backups worker, see README)"
        )
    return True, f"{len(workers)} worker(s) alive"


CHECKS = {"database": _database, "redis": _redis, "workers": _workers}


def readiness_checks() -> list[CheckResult]:
    results: list[CheckResult] = []
    for name, check in CHECKS.items():
        if name == "workers" and results and not results[-1].ok:
            # Without Redis the workers cannot be counted; say so rather than time out twice.
            results.append(CheckResult(name, False, "skipped: Redis is unreachable", 0.0))
            continue
        results.append(_timed(name, check))
    return results
