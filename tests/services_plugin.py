"""Loaded with ``-p`` so it runs before pytest-django reads the settings.

Starts a private Redis for the run (so tests never touch a developer's queues) and makes sure
PostgreSQL answers (using DATABASE_URL, or a throwaway local cluster). xdist workers inherit the
environment set here, then each takes its own share of the shared servers: Redis database
``1 + worker number`` (queues, cache, RQ worker registrations) and its own backup folder.
pytest-django gives each worker its own test database (``test_<name>_gw0`` ...), and
``tests.conftest.subprocess_env`` hands that database to the workers, gunicorn and commands a
test starts.
"""

import atexit
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from platform_site import devservices

# Development settings (http links, no HTTPS redirect); Django's test runner still turns DEBUG off.
os.environ.setdefault("DEBUG", "1")

# Enough Redis databases for one per xdist worker (database 0 is the controller's, unused by tests).
REDIS_DATABASES = 128

if not os.environ.get("PLATFORM_TEST_SERVICES"):
    run_dir = Path(tempfile.mkdtemp(prefix="platform-tests-"))
    redis_server = devservices.start_redis(run_dir / "redis", databases=REDIS_DATABASES)
    atexit.register(redis_server.stop)
    os.environ["REDIS_URL"] = redis_server.url
    database_url = os.environ.get("DATABASE_URL", devservices.DEFAULT_DATABASE_URL)
    if not devservices.postgres_answers(database_url):
        postgres = devservices.start_postgres(run_dir / "postgres")
        atexit.register(postgres.stop)
        database_url = postgres.url
    os.environ["DATABASE_URL"] = database_url
    os.environ["PLATFORM_TEST_RUN_DIR"] = str(run_dir)
    # Backups taken by any test (e.g. the final backup of a deprovisioned shop) stay in the run dir.
    os.environ.setdefault("BACKUP_LOCAL_DIR", str(run_dir / "backups"))
    os.environ["PLATFORM_TEST_SERVICES"] = "1"

# Set by pytest-xdist in each worker before any plugin is imported: "gw0", "gw1", ...
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and "PLATFORM_TEST_WORKER" not in os.environ:
    os.environ["PLATFORM_TEST_WORKER"] = _worker
    number = int(_worker[2:])
    redis_url = urlparse(os.environ["REDIS_URL"])
    assert number + 1 < REDIS_DATABASES, f"more xdist workers than Redis databases ({REDIS_DATABASES})"
    os.environ["REDIS_URL"] = redis_url._replace(path=f"/{number + 1}").geturl()
    backup_dir = os.environ.get("BACKUP_LOCAL_DIR")
    if backup_dir:
        os.environ["BACKUP_LOCAL_DIR"] = str(Path(backup_dir) / _worker)
