#!/usr/bin/env python
"""Blue-green deploy of the test stack on a local Docker Engine, under a request loop.

    .venv/bin/python bench/bench_deploy.py [--rounds 5] [--threads 2]

A private dockerd (no bridge, host networking), the test images (busybox httpd reporting its
version; nginx edge from the host's binary), a database of its own (``bench_deploy``). Each round
deploys the next version with ``deployments.services`` (reconcile, start green, migrate_schemas,
health + HTTP probe, edge switch + reload, drain 1 s, stop old) while threads send requests through
the edge, each on a new connection. Measured: total deploy time, cutover (the "switch edge" step:
write config, nginx -t, reload, confirm), the window during which both versions answered, failed
requests, request rate.

Baseline in the same run: the stock compose way (`docker-compose up -d` with a changed image
recreates the container in place: stop old, start new on the same port), done with the same SDK
calls against the same engine and edge, under the same loop.
"""

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from bench.docker_env import docker_bench_environment  # noqa: E402
from platform_site import devservices  # noqa: E402

DB_NAME = "bench_deploy"


class Loop:
    def __init__(self, url: str, threads: int):
        self.url, self.threads = url, threads
        self.ok = 0
        self.failures = 0
        self.first_new: float | None = None
        self.last_old: float | None = None
        self.old = self.new = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _run(self):
        import requests

        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = requests.get(self.url, timeout=5, headers={"Connection": "close"})
                now = time.monotonic()
                with self._lock:
                    if r.status_code != 200:
                        self.failures += 1
                        continue
                    self.ok += 1
                    if r.text == self.new and self.first_new is None:
                        self.first_new = now
                    if r.text == self.old:
                        self.last_old = now
            except requests.RequestException:
                with self._lock:
                    self.failures += 1

    def __enter__(self):
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.elapsed = time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return (self.ok + self.failures) / self.elapsed

    @property
    def mixed_window(self) -> float:
        if self.first_new is None or self.last_old is None:
            return 0.0
        return max(0.0, self.last_old - self.first_new)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with docker_bench_environment(DB_NAME, "bench-deploy-") as (docker_url, run_dir):
        run(args, docker_url)


def run(args, docker_url: str) -> None:
    import django

    django.setup()
    import docker
    from django.core.management import call_command

    from core.audit import Actor
    from deployments.models import Deployment, Environment, Target
    from deployments.secrets import environment_secret_set
    from deployments.services import deployment_create, deployment_run, release_create
    from tests.deployments.images import build_app_image, build_edge_image, free_port_pair, make_stack

    call_command("migrate_schemas", "--noinput", verbosity=0)
    client = docker.DockerClient(base_url=docker_url, version="auto")
    versions = [f"{i}.0.0" for i in range(1, args.rounds + 2)]
    images = {v: build_app_image(client, v) for v in versions}
    edge_image = build_edge_image(client)
    actor = Actor.command("bench_deploy")
    edge_port, app_port = devservices.free_port(), free_port_pair()
    stack = make_stack(app_port=app_port, secret_name="BENCH_APP_SECRET")
    environment = Environment.objects.create(name="bench")
    environment_secret_set(
        environment=environment, name="BENCH_APP_SECRET", value="bench-secret", actor=actor
    )
    target = Target.objects.create(
        environment=environment,
        name="bench",
        docker_host=docker_url,
        project="bench",
        edge_listen=f"127.0.0.1:{edge_port}",
        edge_image=edge_image,
        stack=stack,
        health_timeout_seconds=30,
        drain_seconds=1.0,
    )
    for v in versions:
        release_create(version=v, images={"web": images[v]}, actor=actor)
    first = deployment_run(
        deployment=deployment_create(environment="bench", version=versions[0], actor=actor), actor=actor
    )
    assert first.status == Deployment.Status.SUCCEEDED, first.error
    url = f"http://127.0.0.1:{edge_port}/version"

    ours = []
    for old, new in zip(versions, versions[1:], strict=False):
        with Loop(url, args.threads) as loop:
            loop.old, loop.new = old, new
            time.sleep(1)
            started = time.monotonic()
            d = deployment_run(
                deployment=deployment_create(environment="bench", version=new, actor=actor), actor=actor
            )
            total = time.monotonic() - started
            time.sleep(1)
        assert d.status == Deployment.Status.SUCCEEDED, d.error
        switch = d.steps.get(name="switch edge")
        migrate = d.steps.get(name="migrate")
        ours.append(
            {
                "total": total,
                "cutover": (switch.finished_at - switch.started_at).total_seconds(),
                "migrate": (migrate.finished_at - migrate.started_at).total_seconds(),
                "mixed": loop.mixed_window,
                "failed": loop.failures,
                "requests": loop.ok + loop.failures,
                "rate": loop.rate,
            }
        )

    # Stock compose recreate: one container on a fixed port behind the same kind of edge.
    target.refresh_from_db()
    for c in client.containers.list(all=True, filters={"label": "platform.role=app"}):
        c.remove(force=True)
    naive_port = app_port + 2  # web-1-blue's port, unused with one replica
    stock = []
    cmd = ["/bin/sh", "-c", f"exec httpd -f -p 127.0.0.1:{naive_port} -h /www"]
    from deployments.engines.compose import ComposeEngine, Instance

    engine = ComposeEngine(target)
    current = client.containers.run(
        images[versions[0]], cmd, name="stock-web", network_mode="host", detach=True, init=True
    )
    # The release proxy now points at the stock container's port.
    engine.switch_proxy([Instance("web", 1, "blue")])
    for old, new in zip(versions, versions[1:], strict=False):
        with Loop(url, args.threads) as loop:
            loop.old, loop.new = old, new
            time.sleep(1)
            started = time.monotonic()
            current.stop(timeout=10)
            current.remove()
            current = client.containers.run(
                images[new], cmd, name="stock-web", network_mode="host", detach=True, init=True
            )
            import requests

            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{naive_port}/version", timeout=1).text == new:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.01)
            total = time.monotonic() - started
            time.sleep(1)
        stock.append(
            {"total": total, "failed": loop.failures, "requests": loop.ok + loop.failures, "rate": loop.rate}
        )

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print(
        f"\nmachine: {platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} deploys each, {args.threads} request threads, new connection per request"
    )
    print(
        f"{'path':<34}{'total s':>9}{'cutover s':>11}{'mixed s':>9}{'failed':>8}{'requests':>10}{'req/s':>8}"
    )
    print(
        f"{'ours: blue-green (median)':<34}{med(ours, 'total'):>9.2f}{med(ours, 'cutover'):>11.3f}"
        f"{med(ours, 'mixed'):>9.3f}{sum(r['failed'] for r in ours):>8}{sum(r['requests'] for r in ours):>10}"
        f"{med(ours, 'rate'):>8.0f}"
    )
    print(f"{'  of which migrate_schemas (median)':<34}{med(ours, 'migrate'):>9.2f}")
    print(
        f"{'stock: recreate in place (median)':<34}{med(stock, 'total'):>9.2f}{'-':>11}{'-':>9}"
        f"{sum(r['failed'] for r in stock):>8}{sum(r['requests'] for r in stock):>10}"
        f"{med(stock, 'rate'):>8.0f}"
    )
    print("per round (ours):", [(round(r["total"], 2), round(r["cutover"], 3), r["failed"]) for r in ours])
    print("per round (stock):", [(round(r["total"], 2), r["failed"]) for r in stock])


if __name__ == "__main__":
    main()
