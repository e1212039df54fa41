"""A real Docker Engine for the deployment tests, with the test images built once per session."""

import getpass
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker
import pytest
import requests

from core.audit import Actor
from deployments.models import Environment, Target
from deployments.secrets import environment_secret_set
from platform_site.devservices import free_port, start_dockerd
from tests.deployments.images import build_app_image, build_edge_image, free_port_pair, make_stack

SECRET_VALUE = "s3cr3t-value-never-logged"


def make_tls(folder: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(ext + "\n")
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}-key.pem",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {
        k: str(folder / v)
        for k, v in (
            ("ca", "ca.pem"),
            ("cert", "client.pem"),
            ("key", "client-key.pem"),
            ("server_cert", "server.pem"),
            ("server_key", "server-key.pem"),
        )
    }


@pytest.fixture(scope="session")
def docker_engine():
    folder = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
    tls = make_tls(folder / "tls")
    tcp_port = free_port()
    # The same engine also answers on tcp:// with mutual TLS, like a remote compose host.
    server = start_dockerd(
        folder,
        extra_args=(
            "-H",
            f"tcp://127.0.0.1:{tcp_port}",
            "--tlsverify",
            "--tlscacert",
            tls["ca"],
            "--tlscert",
            tls["server_cert"],
            "--tlskey",
            tls["server_key"],
        ),
    )
    client = docker.DockerClient(base_url=server.url, version="auto")
    images = {
        "v1": build_app_image(client, "1.0.0"),
        "v2": build_app_image(client, "2.0.0"),
        "v3": build_app_image(client, "3.0.0", healthy=False),
        "v4": build_app_image(client, "4.0.0", migrate_exit=3),
        "edge": build_edge_image(client),
    }
    yield {
        "url": server.url,
        "client": client,
        "images": images,
        "tcp": f"tcp://127.0.0.1:{tcp_port}",
        "tls": tls,
    }
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.close()
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def engine(docker_engine):
    """The session's engine, emptied of containers and volumes after each test."""
    yield docker_engine
    client = docker_engine["client"]
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.volumes.prune()
    client.networks.prune()


@pytest.fixture
def compose_target(engine, settings, monkeypatch):
    settings.DEPLOY_MIGRATE_COMMAND = ["migrate_schemas", "--noinput"]
    env = Environment.objects.create(name="production")
    # From the environment's secret store, never the worker's environment.
    environment_secret_set(
        environment=env, name="TEST_APP_SECRET", value=SECRET_VALUE, actor=Actor.command("pytest")
    )
    edge_port = free_port()
    return Target.objects.create(
        environment=env,
        name="vps-1",
        kind=Target.Kind.COMPOSE,
        docker_host=engine["url"],
        project=f"shop{edge_port}",
        edge_listen=f"127.0.0.1:{edge_port}",
        edge_image=engine["images"]["edge"],
        stack=make_stack(app_port=free_port_pair()),
        health_timeout_seconds=8,
        drain_seconds=0.5,
    )


class RequestLoop:
    """Requests through the edge from a background thread: counts failures and versions seen."""

    def __init__(self, url: str):
        self.url, self.ok, self.failures, self.versions = url, 0, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 120  # bounded even if a test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                # A new connection per request, like independent clients.
                r = requests.get(self.url, timeout=5, headers={"Connection": "close"})
                if r.status_code != 200:
                    self.failures.append(
                        f"HTTP {r.status_code} at {time.monotonic() - self._started:.2f} s "
                        f"(edge color {r.headers.get('X-Platform-Color')!r}, "
                        f"server {r.headers.get('Server')!r}): {r.text[:120]!r}"
                    )
                else:
                    self.ok += 1
                    if not self.versions or self.versions[-1] != r.text:
                        self.versions.append(r.text)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def request_loop():
    return RequestLoop


@pytest.fixture
def edge_get():
    def get(target: Target, path: str = "/version") -> requests.Response:
        return requests.get(f"http://{target.edge_listen}{path}", timeout=5)

    return get


@pytest.fixture(scope="session")
def ssh_docker_host(docker_engine):
    """A real sshd on loopback whose sessions reach the test engine, like a compose host over SSH.

    The far side runs ``docker system dial-stdio`` (sshd's SetEnv points it at the test engine).
    The client side is a home folder with .ssh/config (the key) and .ssh/known_hosts, which the
    Docker SDK reads from $HOME exactly as it reads the worker's own in production.
    """
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.fail("sshd not found: install the Debian package 'openssh-server' (scripts/setup).")
    folder = Path(tempfile.mkdtemp(prefix="sshd-", dir="/tmp"))
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    port = free_port()
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {folder}/client_key\n")
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/host_key\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\nPidFile {folder}/sshd.pid\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nSetEnv DOCKER_HOST={docker_engine['url']}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = open(folder / "sshd.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "home": str(home)}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    shutil.rmtree(folder, ignore_errors=True)
