import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR, subprocess_env
from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def webhook_worker():
    """The real RQ worker (default queue, burst, with the scheduler so due retries run), allowed
    to reach the loopback receiver, with a short retry schedule."""

    def run(*, schedule: str = "1,1", timeout: str = "1") -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", "rqworker", "default", "--burst", "--with-scheduler"],
            cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
            env=subprocess_env(OUTBOUND_ALLOWED_NETWORKS="127.0.0.1/32", WEBHOOK_RETRY_SCHEDULE=schedule,
                               WEBHOOK_TIMEOUT_SECONDS=timeout),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run
