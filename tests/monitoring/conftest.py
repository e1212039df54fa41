"""Fixtures for the monitoring tests: private servers on loopback ports, stopped afterwards."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from core.facts import fact_sources_replaced
from platform_site import devservices
from tests.conftest import BASE_DIR, subprocess_env


@pytest.fixture(autouse=True)
def _loopback_allowed(settings, monkeypatch):
    """Receivers and shop servers here listen on loopback, which core.outbound refuses unless
    allowed (also for workers started as subprocesses). Tests of the refusal set it back to []."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")


@pytest.fixture
def private_redis():
    """A redis-server of this test's own, so the test can stop it."""
    folder = Path(tempfile.mkdtemp(prefix="mon-redis-"))
    server = devservices.start_redis(folder)
    yield server
    subprocess.run(server.stop_cmd, capture_output=True, timeout=10)


@pytest.fixture
def live_worker():
    """A real `rqworker` (not burst) for the test's duration, registered in the test Redis."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "default", "long", "backups"],
        cwd=BASE_DIR, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    from rq import Worker

    from monitoring.health import redis_client

    deadline = time.monotonic() + 20
    while not Worker.all(connection=redis_client()):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "rqworker did not register within 20 s"
        time.sleep(0.1)
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def stop_redis():
    def stop(server) -> None:
        subprocess.run(server.stop_cmd, capture_output=True, timeout=10)
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()

    return stop


class Receiver:
    """A real HTTP server on loopback that records each POST and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        import http.server
        import threading

        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                import gzip
                import zlib

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success", "message": "ok"}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json(self, index: int = -1) -> dict:
        import json

        return json.loads(self.requests[index]["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


# Playwright's sync API runs an event loop in this thread; the test's own ORM calls need this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = BASE_DIR / "test-artifacts"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Debian's Chromium, never a downloaded browser; a missing one fails the run.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/setup (Debian package chromium)"
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1000}}


RULE_SOURCES = ("certificates", "backups", "drills", "deployments")


@pytest.fixture
def unwired_facts():
    """No app's facts for the rules: they and the dashboard say "not available yet"."""
    with fact_sources_replaced(dict.fromkeys(RULE_SOURCES)):
        yield
