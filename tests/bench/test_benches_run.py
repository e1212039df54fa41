"""Every benchmark script still starts and completes a tiny run, so none rots unnoticed.

Each ``bench/bench_*.py`` runs as a subprocess, as a person would run it, with the smallest
sizes it accepts: it must exit 0 and print its result table. The figures mean nothing at this
size; they are not checked. The benches bring their own services (a private Redis, gunicorn and
wrk, moto's S3 server, a private dockerd, nginx, pebble-challtestsrv) and their own databases on
DATABASE_URL's server, and remove them at the end.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
BENCH_DIR = BASE_DIR / "bench"

# script: (tiny arguments, a line its result table prints), slowest first
BENCHES = {
    "bench_backups": (
        ["--products", "300", "--tenants", "4", "--workers", "2"],
        "worker peak RSS",
    ),
    "bench_offsite": (["--tenants", "2", "--products", "10", "--workers", "1"], "copy lag (verified"),
    "bench_pitr": (["--products", "300", "--load-seconds", "3"], "| one shop to a moment"),
    "bench_deploy": (["--rounds", "1", "--threads", "1"], "per round (ours):"),
    "bench_api": (["--requests", "10", "--concurrency", "1", "--shops", "3"], "get tenant: API"),
    "bench_provision": (["--tenants", "2", "--chunk", "1", "--extra-migrations", "2"], "stock / ours"),
    "bench_routing": (
        ["--tenants", "2", "--products", "3", "--rounds", "1", "--duration", "1", "--connections", "4",
         "--warmup", "1"],
        "Target ours >= 95% of plain req/s",
    ),
    "bench_migrate": (["--sizes", "3"], "| migration | 3 |"),
    "bench_pool": (["--spares", "1", "--batch", "2", "--burst", "4", "--burst-migrate", "0"],
                   "| replay, 2 per transaction |"),
    "bench_domains": (["--sizes", "5", "--pending", "4", "--rounds", "1"], "| verification | concurrency |"),
    "bench_edge_push": (["--sizes", "1,2", "--rounds", "1", "--cutovers", "1"], "| blue-green #1 |"),
    "bench_monitoring": (
        ["--tenants", "20", "--endpoints", "4", "--rounds", "1"],
        "| benchmark | path | time | note |",
    ),
    "bench_webhooks": (["--rounds", "10", "--messages", "5"], "| suspend + resume | hook, 3 endpoints |"),
}


def test_every_bench_script_is_covered():
    scripts = {path.stem for path in BENCH_DIR.glob("bench_*.py")}
    assert scripts == set(BENCHES), "add the new bench to BENCHES with tiny arguments"


def _environment() -> dict[str, str]:
    # The benches choose their own settings, Redis and databases; only the server is given.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "BENCH_", "PLATFORM_TEST_", "REDIS_"))}
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(script: str) -> tuple[subprocess.CompletedProcess, float]:
    args, _ = BENCHES[script]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / f"{script}.py"), *args],
        cwd=BASE_DIR, env=_environment(), capture_output=True, text=True, timeout=300,
    )
    return proc, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("script", list(BENCHES))
def test_bench_completes_a_tiny_run(script):
    # One bench per test: under xdist they run side by side on different workers, never twice.
    proc, seconds = _run(script)
    _, table_line = BENCHES[script]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited {proc.returncode} after {seconds:.0f} s:\n{output[-4000:]}"
    assert table_line in proc.stdout, f"{script} printed no result table:\n{proc.stdout[-3000:]}"
