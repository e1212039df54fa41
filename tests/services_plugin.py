"""Loaded with ``-p`` so it runs before pytest-django reads the settings.

Starts a private Redis for the run (so tests never touch a developer's queues) and makes sure
PostgreSQL answers (using DATABASE_URL, or a throwaway local cluster). xdist workers inherit the
environment set here.
"""

import atexit
import os
import tempfile
from pathlib import Path

from platform_site import devservices

# Development settings (http links, no HTTPS redirect); Django's test runner still turns DEBUG off.
os.environ.setdefault("DEBUG", "1")

if not os.environ.get("PLATFORM_TEST_SERVICES"):
    run_dir = Path(tempfile.mkdtemp(prefix="platform-tests-"))
    redis_server = devservices.start_redis(run_dir / "redis")
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
