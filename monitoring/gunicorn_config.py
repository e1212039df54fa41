"""gunicorn settings for multi-process metrics: `gunicorn -c python:monitoring.gunicorn_config ...`.

With PROMETHEUS_MULTIPROC_DIR set (an empty folder per server start), every worker writes its
metrics there and /metrics, answered by any worker, adds them up.
"""

import os


def on_starting(server) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # Files left by an earlier server would be counted again.
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
