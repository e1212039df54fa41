"""One-off containers on a compose target: the release's own migrations, run from its own image.

Like the AWS target's one-off ``RunTask``: the new release's image, the app service's environment
and secrets, the stack's ``migrate.command``, and ``DATABASE_URL`` set to the direct database
connection (``DEPLOY_MIGRATE_DATABASE_URL``; never PgBouncer: migrations take locks and run DDL
that a transaction pooler may split). Its output is streamed line by line into the step log; a
non-zero exit, or no exit within ``DEPLOY_MIGRATE_TIMEOUT_SECONDS``, fails the step.
"""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit

from django.conf import settings
from docker.errors import APIError, DockerException
from docker.models.containers import Container

from core.db import connection
from deployments.errors import StepFailed

_DONE = object()


def direct_database_url() -> str:
    """The connection migrations get: DEPLOY_MIGRATE_DATABASE_URL, BACKUP_DATABASE_URL (both meant to
    bypass PgBouncer), else the control plane's own connection."""
    if settings.DEPLOY_MIGRATE_DATABASE_URL or settings.BACKUP_DATABASE_URL:
        return str(settings.DEPLOY_MIGRATE_DATABASE_URL or settings.BACKUP_DATABASE_URL)
    s = connection.settings_dict
    auth = quote(s["USER"] or "postgres") + (f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def database_url_password(url: str) -> str:
    """The password in a database URL ("" for none), so the step log can scrub it."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole lines from docker's log stream, whose chunks may end mid-line."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            yield line.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace")


def stream_until_exit(container: Container, *, log: Callable[[str], None], timeout: float, label: str) -> int:
    """Log the container's output as it comes until it exits; its exit code.

    The stream is read on a thread (docker's log stream has no read deadline of its own) and every
    line is logged on the caller's thread, which holds the database connection the log writes to.
    """
    lines: queue.Queue[object] = queue.Queue()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for line in _lines(container.logs(stream=True, follow=True)):
                lines.put(line)
        except (DockerException, OSError) as exc:  # the engine went away: reported below
            failure.append(exc)
        finally:
            lines.put(_DONE)

    threading.Thread(target=read, name=f"logs {label}", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            item = lines.get(timeout=0.5)
        except queue.Empty:
            item = None
        if item is _DONE:
            break
        if isinstance(item, str) and item.strip():
            log(item)
        if time.monotonic() > deadline:
            try:
                container.kill()
            except APIError:
                pass  # it exited meanwhile
            raise StepFailed(
                f"{label} did not finish within {timeout:.0f} s and was stopped "
                "(DEPLOY_MIGRATE_TIMEOUT_SECONDS); its output is above."
            )
    if failure:
        raise StepFailed(f"Lost {label}'s output: {failure[0]}")
    result = container.wait(timeout=max(1.0, deadline - time.monotonic()))
    return int(result.get("StatusCode", -1))
