"""The image's HEALTHCHECK: ``python -m monitoring.container_health [web|worker|scheduler]``.

One image runs every role, so the check follows ``CONTAINER_ROLE`` (default ``web``):

- web: ``GET http://127.0.0.1:$PORT/healthz`` answers 200 (the process serves requests);
- worker: an RQ worker of this container (its hostname) is registered in Redis; RQ lets a
  worker's key expire when its heartbeats stop;
- scheduler: RQ's cron scheduler of this container heartbeated within the last two minutes.

Deliberately free of Django: it runs every few seconds, and must not need the database.
Exit 0 when healthy, 1 with one line saying why not.
"""

import os
import socket
import sys
import time
import urllib.request

CRON_REGISTRY = "rq:cron_schedulers"  # rq.cron_scheduler_registry.get_registry_key()
CRON_STALE_SECONDS = 120  # rq.defaults.DEFAULT_CRON_SCHEDULER_TTL


def check_web() -> str | None:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed loopback URL
            return None if response.status == 200 else f"{url} answered {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def _redis():
    from redis import Redis

    return Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), socket_timeout=4)


def check_worker() -> str | None:
    from rq import Worker

    host = socket.gethostname()
    workers = Worker.all(connection=_redis())
    if any(w.hostname == host for w in workers):
        return None
    return f"no RQ worker of host {host} is registered in Redis ({len(workers)} others are)"


def check_scheduler() -> str | None:
    host = socket.gethostname()
    beats = _redis().zrange(CRON_REGISTRY, 0, -1, withscores=True)
    fresh = [name for name, score in beats if score > time.time() - CRON_STALE_SECONDS]
    if any(name.decode().startswith(f"{host}:") for name in fresh):
        return None
    return f"RQ's cron scheduler of host {host} has not heartbeated in {CRON_STALE_SECONDS} s"


CHECKS = {"web": check_web, "worker": check_worker, "scheduler": check_scheduler}


def main(argv: list[str]) -> int:
    role = (argv[0] if argv else os.environ.get("CONTAINER_ROLE", "web")).strip()
    check = CHECKS.get(role)
    if check is None:
        print(f"unknown role {role!r}; use one of {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    try:
        problem = check()
    except Exception as exc:  # Redis down, bad URL: unhealthy, with the reason
        problem = f"{role} check failed: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
