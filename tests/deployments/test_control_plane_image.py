"""The control plane's own image and production stack, built and booted on the test Docker Engine.

The image is built from this checkout's Dockerfile (base: a Debian bookworm root filesystem made
by mmdebstrap, see base_images.py; wheels from a loopback wheelhouse), then
compose/docker-compose.prod.yml is brought up unchanged by docker-compose itself, with only the
images, published ports, certificate folder and secrets given through the environment, as an
operator does. PostgreSQL, PgBouncer, Redis and nginx come from one image of Debian's packages
(their commands and configuration are the compose file's); the test PostgreSQL image has a small
entrypoint that does what the official image's does (initdb with POSTGRES_USER/PASSWORD/DB).
"""

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from core.audit import Actor
from deployments.engines.compose import ComposeEngine
from deployments.models import Deployment, DeploymentLogLine, Environment, Target
from deployments.recorder import Recorder
from deployments.services import release_create
from platform_site.devservices import free_port
from tests.deployments.base_images import (
    PYTHON_PACKAGES,
    REPO,
    SERVER_PACKAGES,
    build_context_key,
    cached_image,
    debian_rootfs,
    import_rootfs,
    served,
    wheelhouse,
)

pytestmark = [pytest.mark.slow, pytest.mark.image]

BASE_DOMAIN = "platform.test"
ADMIN_HOST = f"admin.{BASE_DOMAIN}"
VERSION = "1.2.3"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"

# What the official postgres image's entrypoint does on an empty data folder, for Debian's server.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -eu
export PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql && chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pw
  initdb -U "$POSTGRES_USER" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm /tmp/pw
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
  createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
  pg_ctl -w stop >/dev/null
fi
[ "${1:-}" = postgres ] && shift
exec postgres -c listen_addresses='*' "$@"
"""


def _context(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _build_log(chunks) -> str:
    return "".join(c.get("stream", "") or c.get("error", "") for c in chunks if isinstance(c, dict))


@pytest.fixture(scope="module")
def built(docker_engine):
    return build_images(docker_engine)


def build_images(docker_engine) -> dict:
    """The base images imported, the servers image, then the control plane image (timed)."""
    client = docker_engine["client"]
    timings = {}
    started = time.monotonic()
    base = import_rootfs(
        docker_engine["url"], debian_rootfs("python", PYTHON_PACKAGES), "platform-test/python-base:bookworm"
    )
    servers = import_rootfs(
        docker_engine["url"], debian_rootfs("servers", SERVER_PACKAGES), "platform-test/servers:bookworm"
    )
    client.images.build(
        fileobj=_context(
            {
                "Dockerfile": f"FROM {servers}\nCOPY entrypoint /usr/local/bin/docker-entrypoint\n"
                'ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]\nCMD ["postgres"]\n',
                "entrypoint": POSTGRES_ENTRYPOINT,
            }
        ),
        custom_context=True,
        tag="platform-test/postgres:15",
        rm=True,
    )
    timings["base images"] = time.monotonic() - started
    started = time.monotonic()
    ref = f"platform-test/control-plane:{VERSION}"
    buildargs = {"BASE_IMAGE": base, "PIP_NO_INDEX": "1", "VERSION": VERSION, "GIT_SHA": GIT_SHA}

    def build() -> None:
        started = time.monotonic()
        wheels = wheelhouse()
        timings["wheelhouse"] = time.monotonic() - started
        started = time.monotonic()
        with served(wheels) as index:
            try:
                client.images.build(
                    path=str(REPO),
                    tag=ref,
                    rm=True,
                    forcerm=True,
                    network_mode="host",  # pip reaches the loopback wheelhouse; no registry, no PyPI
                    buildargs={**buildargs, "PIP_FIND_LINKS": index},
                )
            except Exception as exc:  # BuildError carries the log
                log_text = _build_log(getattr(exc, "build_log", []))
                pytest.fail(f"docker build failed: {exc}\n{log_text[-4000:]}")
        timings["image build"] = time.monotonic() - started

    # Built once per content of the build context (and base): a rerun on the same code loads it.
    started = time.monotonic()
    key = build_context_key(debian_rootfs("python", PYTHON_PACKAGES).name, buildargs)
    if cached_image(docker_engine["url"], ref, key, build):
        timings["image loaded from cache"] = time.monotonic() - started
    image = client.images.get(ref)
    print(
        f"\ncontrol plane image {ref}: {image.attrs['Size'] / 1e6:.0f} MB; timings (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
    return {"ref": ref, "image": image, "servers": servers, "timings": timings}


def test_image_labels_user_healthcheck_and_static_files(built, docker_engine):
    image = built["image"]
    config = image.attrs["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == GIT_SHA
    assert config["User"] == "app"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "monitoring.container_health"]
    assert config["Cmd"] == ["gunicorn", "-c", "python:monitoring.gunicorn_config", "platform_site.wsgi"]
    assert "RELEASE_VERSION=1.2.3" in config["Env"]
    out = (
        docker_engine["client"]
        .containers.run(
            built["ref"],
            [
                "sh",
                "-c",
                "id -u; ls /app/staticfiles/admin/css | grep -c '^base\\.[0-9a-f]*\\.css'; "
                "test -w /app && echo app-writable || echo app-read-only; pg_dump --version; "
                "ls /app/tests 2>&1 | head -1; python -m monitoring.container_health nonsense; echo exit=$?",
            ],
            remove=True,
            network_mode="none",
        )
        .decode()
    )
    lines = out.splitlines()
    assert lines[0] == "10001"  # not root
    assert int(lines[1]) >= 1  # hashed static files collected into the image
    assert lines[2] == "app-read-only"
    assert lines[3].startswith("pg_dump (PostgreSQL) 15.")
    assert "No such file" in lines[4]  # tests are not shipped
    assert lines[-1] == "exit=2"


@pytest.fixture(scope="module")
def prod_stack(built, docker_engine, tmp_path_factory):
    with boot_stack(built, docker_engine, tmp_path_factory.mktemp("prod")) as stack:
        yield stack


@contextlib.contextmanager
def boot_stack(built, docker_engine, folder: Path):
    """compose/docker-compose.prod.yml brought up by docker-compose, as an operator would."""
    tls = _edge_certificate(folder / "tls")
    https, http = free_port(), free_port()
    project = f"cp{https}"
    env = {
        "PATH": "/usr/bin:/bin",
        "DOCKER_HOST": docker_engine["url"],
        "PLATFORM_IMAGE": built["ref"],
        "POSTGRES_IMAGE": "platform-test/postgres:15",
        "PGBOUNCER_IMAGE": built["servers"],
        "REDIS_IMAGE": built["servers"],
        "NGINX_IMAGE": built["servers"],
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PLATFORM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "PLATFORM_BASE_DOMAIN": BASE_DOMAIN,
        "PLATFORM_ADMIN_HOST": ADMIN_HOST,
        "EDGE_CERT_DIR": tls["dir"],
        "EDGE_PUBLISH_ADDRESS": "127.0.0.1",
        "EDGE_HTTPS_PORT": str(https),
        "EDGE_HTTP_PORT": str(http),
        "PLATFORM_NETWORK_SUBNET": f"172.31.{https % 250}.0/24",
        "HEALTHCHECK_INTERVAL": "2s",
        "STAFF_REQUIRE_2FA": "0",
        "TENANT_SCHEMA_POOL_SIZE": "1",
        "WEB_CONCURRENCY": "2",
    }

    def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker-compose", "-p", project, "-f", str(REPO / "compose" / "docker-compose.prod.yml"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    started = time.monotonic()
    up = compose("up", "-d")
    stack = {
        "compose": compose,
        "project": project,
        "client": docker_engine["client"],
        "https": https,
        "http": http,
        "ca": tls["ca"],
        "env": env,
    }
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:] + _logs(compose)
        _wait(lambda: _curl(stack, f"https://{ADMIN_HOST}/healthz")[0] == 200, "the edge to answer", 120)
        stack["boot_seconds"] = time.monotonic() - started
        print(f"\nproduction stack up and answering in {stack['boot_seconds']:.1f} s")
        yield stack
    finally:
        started = time.monotonic()
        compose("down", "-v", "--remove-orphans", "-t", "5", timeout=120)
        print(f"\nproduction stack down in {time.monotonic() - started:.1f} s")


def _logs(compose) -> str:
    return "\n" + compose("logs", "--no-color", "--tail", "30").stdout[-6000:]


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (requests.RequestException, subprocess.SubprocessError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _edge_certificate(folder: Path) -> dict[str, str]:
    """A CA, and a certificate for the admin host and *.BASE_DOMAIN signed by it (openssl)."""
    folder.mkdir(parents=True)
    (folder / "certs").mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=edge-test-ca",
    )
    (folder / "ext").write_text(f"subjectAltName=DNS:{ADMIN_HOST},DNS:*.{BASE_DOMAIN}\n")
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "certs/privkey.pem",
        "-out",
        "edge.csr",
        "-subj",
        f"/CN={ADMIN_HOST}",
    )
    ssl(
        "x509",
        "-req",
        "-in",
        "edge.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "certs/fullchain.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    )
    # nginx's workers read the key as whoever they run as.
    os.chmod(folder / "certs" / "privkey.pem", 0o644)
    return {"dir": str(folder / "certs"), "ca": str(folder / "ca.pem")}


def _curl(stack, url: str, *extra: str) -> tuple[int, dict[str, str], str]:
    """GET through the edge with the real host name (SNI, certificate check against the test CA)."""
    host = re.match(r"https?://([^/]+)", url)[1]
    port = stack["https"] if url.startswith("https") else stack["http"]
    url = url.replace(host, f"{host}:{port}", 1)
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "30",  # a cold worker's first page on a loaded 2-core machine took over 10 s once
            "--cacert",
            stack["ca"],
            "--resolve",
            f"{host}:{port}:127.0.0.1",
            "-D",
            "-",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=40,
    )
    if done.returncode:
        raise subprocess.SubprocessError(done.stderr)
    head, _, body = done.stdout.partition("\n\n")  # text mode turned \r\n into \n
    status = int(head.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head.splitlines()[1:])}
    return status, headers, body


def _exec(stack, service: str, *cmd: str, env: dict[str, str] | None = None) -> str:
    container = stack["client"].containers.get(f"{stack['project']}_{service}_1")
    result = container.exec_run(list(cmd), environment=env)
    output = result.output.decode(errors="replace")
    assert result.exit_code == 0, f"{' '.join(cmd)} in {service}: {output[-2000:]}"
    return output


def test_production_stack_serves_admin_and_shops_over_https_through_pgbouncer(prod_stack):
    stack = prod_stack
    # /healthz through the edge over HTTPS, the certificate checked; HTTP redirects to HTTPS.
    status, headers, body = _curl(stack, f"https://{ADMIN_HOST}/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    status, headers, _ = _curl(stack, f"http://{ADMIN_HOST}/admin/")
    assert status == 301 and headers["location"] == f"https://{ADMIN_HOST}/admin/"

    # The admin login page (HTTPS known to Django through the trusted edge: no redirect loop) and
    # its static files, served by whitenoise from the image with far-future caching.
    status, _, page = _curl(stack, f"https://{ADMIN_HOST}/admin/login/")
    assert status == 200 and 'name="password"' in page
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
    assert css, page[:2000]
    status, headers, body = _curl(stack, f"https://{ADMIN_HOST}{css[1]}")
    assert status == 200 and "max-age=315360000" in headers["cache-control"] and len(body) > 1000

    # Every container is healthy by its own check (web: /healthz, workers: registered in Redis,
    # scheduler: heartbeat, servers: pg_isready / redis-cli / the edge's own page).
    deadline = time.monotonic() + 90
    while unhealthy := _unhealthy(stack):
        assert time.monotonic() < deadline, f"not healthy: {unhealthy}" + _health_logs(stack)
        time.sleep(1)
    migrate = stack["client"].containers.get(f"{stack['project']}_migrate_1")
    assert migrate.attrs["State"]["ExitCode"] == 0

    # A provision queued from the web container runs on the worker; the new shop then answers on
    # its own subdomain through the edge, its route read through PgBouncer.
    _exec(
        stack,
        "web",
        "python",
        "manage.py",
        "shell",
        "-c",
        "from tenants.models import Plan; "
        "Plan.objects.get_or_create(slug='starter', defaults={'name': 'Starter'})",
    )
    queued = _exec(
        stack,
        "web",
        "python",
        "manage.py",
        "provision_tenant",
        "acme-boots",
        "--name",
        "Acme Boots",
        "--plan",
        "starter",
        "--owner-email",
        "owner@acme.test",
        "--async",
    )
    assert "queued" in queued.lower(), queued
    _wait(lambda: _curl(stack, f"https://acme-boots.{BASE_DOMAIN}/")[0] == 200, "the new shop to answer", 90)
    status, _, page = _curl(stack, f"https://acme-boots.{BASE_DOMAIN}/")
    assert status == 200 and "Acme Boots" in page
    worker_log = stack["compose"]("logs", "--no-color", "worker").stdout
    assert "provision" in worker_log.lower(), worker_log[-2000:]
    status, _, _ = _curl(stack, f"https://no-such-shop.{BASE_DOMAIN}/")
    assert status == 404

    # The app's connections to PostgreSQL come from PgBouncer, none from web or the workers.
    ips = {
        name: stack["client"]
        .containers.get(f"{stack['project']}_{name}_1")
        .attrs["NetworkSettings"]["Networks"]
        for name in ("pgbouncer", "web", "worker")
    }
    ip = {name: next(iter(nets.values()))["IPAddress"] for name, nets in ips.items()}
    clients = _exec(
        stack,
        "postgres",
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "platform",
        "-d",
        "platform",
        "-Atc",
        "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE datname = 'platform' "
        "AND client_addr IS NOT NULL AND pid <> pg_backend_pid()",
        env={"PGPASSWORD": stack["env"]["POSTGRES_PASSWORD"]},
    ).split()
    assert ip["pgbouncer"] in clients and ip["web"] not in clients and ip["worker"] not in clients


def _health_logs(stack) -> str:
    out = ""
    for c in stack["client"].containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack['project']}"}
    ):
        c.reload()
        last = ((c.attrs["State"].get("Health") or {}).get("Log") or [{}])[-1]
        out += f"\n{c.name}: {last.get('ExitCode')} {last.get('Output', '')[-300:]}"
    return out


def _unhealthy(stack) -> list[str]:
    out = []
    for c in stack["client"].containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack['project']}"}
    ):
        service = c.labels["com.docker.compose.service"]
        if service == "migrate":
            continue
        c.reload()  # the list gives State as a word; the health is in the full record
        health = (c.attrs["State"].get("Health") or {}).get("Status")
        if c.status != "running" or health != "healthy":
            out.append(f"{service}: {c.status}/{health}")
    return out


@pytest.mark.django_db(transaction=True)
def test_compose_target_runs_the_release_images_own_fast_migrate_schemas(built, docker_engine):
    """The migrate step of a compose target whose stack runs this image: migrate_schemas of the
    release's own code, in a one-off container, on the direct connection, into the step log."""
    target = Target.objects.create(
        environment=Environment.objects.create(name="control-plane"),
        name="cp-host",
        kind=Target.Kind.COMPOSE,
        docker_host=docker_engine["url"],
        project=f"cpmig{free_port()}",
        edge_listen="127.0.0.1:1",
        edge_image="unused:1",
        stack={
            "network_mode": "host",  # reaches the test database on loopback
            "services": {
                "web": {
                    "role": "app",
                    "port": 18000,
                    "environment": {"SECRET_KEY": secrets.token_urlsafe(40), "DEBUG": "0"},
                }
            },
            "edge": {"routes": {"/": "web"}},
            "migrate": {"service": "web", "command": ["python", "manage.py", "migrate_schemas", "--noinput"]},
        },
    )
    release = release_create(version=VERSION, images={"web": built["ref"]}, actor=Actor.command("pytest"))
    deployment = Deployment.objects.create(target=target, release=release)
    recorder = Recorder(deployment)
    with recorder.step("migrate"):
        ComposeEngine(target, recorder).run_migrations(release, lambda: pytest.fail("ran the local command"))
    lines = list(
        DeploymentLogLine.objects.filter(step__deployment=deployment)
        .order_by("pk")
        .values_list("text", flat=True)
    )
    assert (
        lines[0] == f"{target.project}-migrate: {built['ref']} $ python manage.py migrate_schemas --noinput"
    )
    # The fast many-schema path's summary, not django-tenants' per-schema migrate.
    assert any(
        re.match(r"public: up to date; \d+ tenant/pool schema\(s\): 0 migrated", line) for line in lines
    ), lines
    assert lines[-1] == f"{target.project}-migrate: exit code 0"
    assert not docker_engine["client"].containers.list(all=True, filters={"label": "platform.role=migrate"})
