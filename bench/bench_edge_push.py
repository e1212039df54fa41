#!/usr/bin/env python
"""One edge: certificate issued -> served by a compose target's edge, and HTTPS cutovers.

    .venv/bin/python bench/bench_edge_push.py [--sizes 1,1000] [--rounds 3] [--cutovers 2]

A private dockerd (host networking), the test images (nginx from the host's binary; a busybox
httpd answering its colour and Host), Redis and a database of its own (``bench_edge_push``). A
compose target whose stack gives the edge public listeners is deployed once; the shop's platform
host is served with a test-CA wildcard.

Issued -> served: with N-1 active custom domains already served, one more domain's certificate is
committed (the row an issuance writes; one throwaway key pair reused, encrypted at rest), then the
sync job's work runs (``deployments.edges.target_edges_sync``: gather and decrypt every certificate,
one tar through the Docker API, `nginx -t`, reload, wait until no old worker accepts) and a TLS
client polls the edge until the new name's handshake succeeds (unknown names are rejected).
Baseline in the same run: the local edge (``tenants.domains.edge.edge_render`` with a real nginx)
in its default per_domain mode and in shared mode, same sizes, same poll.

Burst: 1,000 ``edge_changed`` signals, and how many syncs they queue.

Cutover: blue-green deploys while a thread sends HTTPS requests (new TLS connection each, SNI,
chain validated) alternately to the shop's subdomain and a custom domain; failed requests counted.
"""

import argparse
import os
import platform
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(BASE_DIR)

from bench.docker_env import docker_bench_environment  # noqa: E402
from platform_site import devservices  # noqa: E402

DB_NAME = "bench_edge_push"
BASE = "platform.test"


def handshake(port: int, name: str, cafile: str | None = None) -> bool:
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if not cafile:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name):
                return True
    except (OSError, ssl.SSLError):
        return False


def https_status(port: int, host: str, cafile: str) -> int:
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return int(data.split(b" ", 2)[1])


def wait_served(port: int, name: str, started: float) -> float:
    deadline = time.monotonic() + 60
    while not handshake(port, name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not served within 60 s")
        time.sleep(0.005)
    return time.perf_counter() - started


class Loop:
    def __init__(self, port: int, hosts: list[str], cafile: str):
        self.port, self.hosts, self.cafile = port, hosts, cafile
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            for host in self.hosts:
                try:
                    ok = https_status(self.port, host, self.cafile) == 200
                except (OSError, ssl.SSLError):
                    ok = False
                self.ok += ok
                self.failed += not ok

    def __enter__(self) -> "Loop":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.seconds = time.monotonic() - self._started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cutovers", type=int, default=2)
    args = parser.parse_args()
    with docker_bench_environment(DB_NAME, "bench-edge-push-", LOG_LEVEL="WARNING") as (docker_url, run_dir):
        run(args, docker_url, run_dir)


def run(args, docker_url: str, run_dir: Path) -> None:
    import django

    django.setup()
    import django_rq
    import docker
    from django.conf import settings
    from django.core.management import call_command

    from bench.bench_domains import _add_active, _tenant
    from core.audit import Actor
    from core.crypto import secret_encrypt
    from deployments.edges import target_edges_sync
    from deployments.models import Deployment, Environment, Target
    from deployments.secrets import environment_secret_set
    from deployments.services import release_create
    from tenants.domains.edge import edge_render
    from tenants.models import Domain
    from tenants.signals import edge_changed
    from tests.deployments.images import (
        build_app_image,
        build_edge_image,
        echo_app_image,
        free_port_pair,
        make_stack,
    )
    from tests.domains.components import Nginx, make_tls_files

    call_command("migrate_schemas", "--noinput", verbosity=0)
    sizes = [int(s) for s in args.sizes.split(",")]
    actor = Actor.command("bench_edge_push")
    client = docker.DockerClient(base_url=docker_url, version="auto")
    versions = [f"{i}.0.0" for i in range(1, args.cutovers + 2)]
    for v in versions:
        release_create(version=v, images={"web": echo_app_image(client, v)}, actor=actor)
    ca, cert, key = make_tls_files(run_dir / "tls", [f"*.{BASE}", "*.bench-edge.example"])
    settings.PLATFORM_BASE_DOMAIN, settings.PLATFORM_ADMIN_HOST = BASE, f"admin.{BASE}"
    settings.EDGE_PLATFORM_CERT, settings.EDGE_PLATFORM_KEY = str(cert), str(key)
    chain_enc, key_enc = secret_encrypt(cert.read_bytes()), secret_encrypt(key.read_bytes())
    http_port, https_port = devservices.free_port(), devservices.free_port()
    stack = make_stack(app_port=free_port_pair(), secret_name="BENCH_APP_SECRET")
    stack["edge"].update(http=f"127.0.0.1:{http_port}", https=f"127.0.0.1:{https_port}")
    env = Environment.objects.create(name="bench")
    environment_secret_set(environment=env, name="BENCH_APP_SECRET", value="bench", actor=actor)
    Target.objects.create(
        environment=env, name="bench", docker_host=docker_url, project="bench",
        edge_listen=f"127.0.0.1:{devservices.free_port()}", edge_image=build_edge_image(client),
        stack=stack, health_timeout_seconds=30, drain_seconds=1.0,
    )
    build_app_image(client, "1.0.0")  # the stack's stateful service runs it
    first = deploy(versions[0], actor)
    assert first.status == Deployment.Status.SUCCEEDED, first.error
    tenant = _tenant()
    rows = []
    for size in sizes:
        Domain.objects.filter(kind=Domain.Kind.CUSTOM).delete()
        _add_active(tenant, 0, size - 1, chain_enc, key_enc)
        target_edges_sync(actor=actor)  # the edge serves the N-1
        pushes, served = [], []
        for r in range(args.rounds):
            name = f"shop{size - 1 + r}.bench-edge.example"
            started = time.perf_counter()
            _add_active(tenant, size - 1 + r, 1, chain_enc, key_enc)
            target_edges_sync(actor=actor)
            pushes.append(time.perf_counter() - started)
            served.append(wait_served(https_port, name, started))
        rows.append(("compose target edge (push)", size, statistics.median(pushes), statistics.median(served),
                     max(served)))
        print(f"target {size}: {rows[-1]}", file=sys.stderr)
        for mode in ("per_domain", "shared"):
            rows.append(local_edge(mode, size, args.rounds, run_dir, tenant, chain_enc, key_enc, actor,
                                   _add_active, edge_render, Nginx, settings))
            print(f"local {mode} {size}: {rows[-1]}", file=sys.stderr)

    # A burst of 1,000 changes queues one sync.
    queue = django_rq.get_queue("default")
    queue.empty()
    django_rq.get_connection("default").delete("platform:target-edges-sync-pending")
    for i in range(1000):
        edge_changed.send(sender=None, actor=actor, reason=f"burst {i}")
    burst_syncs = sum(j.func_name == "deployments.jobs.target_edges_sync_job" for j in queue.jobs)

    # Cutovers over HTTPS on both hosts.
    Domain.objects.filter(kind=Domain.Kind.CUSTOM).delete()
    _add_active(tenant, 0, 1, chain_enc, key_enc)
    target_edges_sync(actor=actor)
    cafile = str(ca)
    hosts = [f"bench.{BASE}", "shop0.bench-edge.example"]
    cutovers = []
    for version in versions[1:]:
        with Loop(https_port, hosts, cafile) as loop:
            time.sleep(0.5)
            d = deploy(version, actor)
            time.sleep(0.5)
        assert d.status == Deployment.Status.SUCCEEDED, d.error
        switch = d.steps.get(name="switch edge")
        cutovers.append(((switch.finished_at - switch.started_at).total_seconds(), loop.ok, loop.failed,
                         loop.seconds))

    print(f"\nmachine: {platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} rounds per size; one shared test key pair")
    print("\n| edge | domains | sync/render s (median) | issued -> served s (median) | max s |")
    print("|---|---|---|---|---|")
    for path, size, push, serve, worst in rows:
        print(f"| {path} | {size} | {push:.3f} | {serve:.3f} | {worst:.3f} |")
    print(f"\nburst: 1000 edge_changed signals queued {burst_syncs} sync job(s)")
    print("\n| cutover over HTTPS (2 hosts, new TLS connection each) | switch s | requests | failed |")
    print("|---|---|---|---|")
    for i, (switch, ok, failed, _secs) in enumerate(cutovers, 1):
        print(f"| blue-green #{i} | {switch:.3f} | {ok + failed} | {failed} |")


def deploy(version: str, actor):
    from deployments.services import deployment_create, deployment_run

    return deployment_run(deployment=deployment_create(environment="bench", version=version, actor=actor),
                          actor=actor)


def local_edge(mode, size, rounds, run_dir, tenant, chain_enc, key_enc, actor, add_active, edge_render,
               nginx_cls, settings) -> tuple:
    """The baseline: the single-host local edge (tenants.domains.edge) with a real nginx."""
    from tenants.models import Domain

    Domain.objects.filter(kind=Domain.Kind.CUSTOM).delete()
    add_active(tenant, 0, size - 1, chain_enc, key_enc)
    settings.EDGE_TLS_MODE = mode
    edge_dir = run_dir / f"local-{mode}-{size}"
    edge_dir.mkdir()
    os.chmod(edge_dir, 0o755)
    settings.EDGE_DIR = edge_dir
    settings.EDGE_HTTP_PORT, settings.EDGE_HTTPS_PORT = devservices.free_port(), devservices.free_port()
    edge_render(actor=actor, reload=False)
    nginx = nginx_cls(edge_dir)
    nginx.start()
    try:
        renders, served = [], []
        for r in range(rounds):
            name = f"shop{size - 1 + r}.bench-edge.example"
            started = time.perf_counter()
            add_active(tenant, size - 1 + r, 1, chain_enc, key_enc)
            edge_render(actor=actor)
            renders.append(time.perf_counter() - started)
            served.append(wait_served(settings.EDGE_HTTPS_PORT, name, started))
    finally:
        nginx.stop()
    return (f"local edge, {mode} (baseline)", size, statistics.median(renders), statistics.median(served),
            max(served))


if __name__ == "__main__":
    main()
