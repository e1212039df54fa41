"""One edge, end to end on a real Docker Engine: the compose target's edge terminates TLS for
``<shop>.<base>`` (a wildcard from a test CA) and a custom domain (Pebble, HTTP-01 answered through
that very edge by the control plane), proxies to the live colour of the shop front, and keeps every
HTTPS request answered through a blue-green cutover and a certificate renewal; a removed domain is
no longer served and its certificate is gone from the edge."""

import socket
import ssl
import threading
import time

import django_rq
import pytest
from cryptography import x509
from django.core.management import call_command

from core.audit import Actor
from core.models import AuditEvent
from deployments import edges
from deployments.engines.compose import ComposeEngine
from deployments.models import Deployment, Target
from deployments.services import deployment_create, deployment_run, release_create
from platform_site.devservices import free_port
from tenants.domains.certificates import certificate_issue
from tenants.domains.services import domain_remove
from tenants.models import Certificate, Domain
from tests.deployments.images import echo_app_image
from tests.domains.components import Pebble, make_tls_files

ACTOR = Actor.command("pytest")
BASE = "platform.test"
CUSTOM = "shop.oneedge.example"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def https_get(port: int, host: str, cafile: str, path: str = "/") -> tuple[int, str, str]:
    """GET over a new TLS connection with SNI ``host``; the chain and name must validate."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), head, body.strip()


def plain_get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head = data.decode(errors="replace").partition("\r\n\r\n")[0]
    return int(head.split()[1]), head


def served_serial(port: int, host: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


class HttpsLoop:
    """New TLS connections to every host in turn from a thread: failures and answers seen."""

    def __init__(self, port: int, hosts: list[str], cafile: str):
        self.port, self.hosts, self.cafile = port, hosts, cafile
        self.ok, self.failures, self.bodies = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 90  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            for host in self.hosts:
                try:
                    status, _, body = https_get(self.port, host, self.cafile)
                except (OSError, ssl.SSLError) as exc:
                    self.failures.append(f"{host}: {exc!r}")
                    continue
                if status != 200:
                    self.failures.append(f"{host}: HTTP {status} {body[:100]!r}")
                else:
                    self.ok += 1
                    self.bodies.add(body)

    def __enter__(self) -> "HttpsLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def deploy(version: str) -> Deployment:
    deployment = deployment_create(environment="production", version=version, actor=ACTOR)
    return deployment_run(deployment=deployment, actor=ACTOR)


def edge_files(engine, target: Target) -> str:
    edge = engine["client"].containers.get(f"{target.project}-edge")
    return edge.exec_run(["sh", "-c", "ls -R /etc/nginx/certs"]).output.decode()


def test_one_edge_serves_shops_over_tls_through_cutover_renewal_and_removal(
    compose_target, engine, make_tenant, dns_server, gunicorn, settings, tmp_path, capsys
):
    settings.PLATFORM_BASE_DOMAIN, settings.PLATFORM_ADMIN_HOST = BASE, f"admin.{BASE}"
    settings.EDGE_DIR = tmp_path / "local-edge"  # the local edge's files (unused here)
    http_port, https_port = free_port(), free_port()
    wild_ca, wild_cert, wild_key = make_tls_files(tmp_path / "wildcard", [f"*.{BASE}"])
    settings.EDGE_PLATFORM_CERT, settings.EDGE_PLATFORM_KEY = str(wild_cert), str(wild_key)
    # The control plane answers HTTP-01 challenges the target's edge forwards.
    control_plane = gunicorn(
        workers=1, PLATFORM_BASE_DOMAIN=BASE, PLATFORM_ADMIN_HOST=f"admin.{BASE}",
        ALLOWED_HOSTS=f"admin.{BASE},.{BASE}",
    )
    settings.EDGE_ACME_UPSTREAM = control_plane
    pebble = Pebble(tmp_path / "pebble", dns_server, http_port)
    settings.ACME_DIRECTORY_URL, settings.ACME_CA_BUNDLE = pebble.directory_url, str(pebble.ca_bundle)
    settings.ACME_TIMEOUT_SECONDS = 60
    try:
        _lifecycle(compose_target, engine, make_tenant, dns_server, pebble, tmp_path, wild_ca,
                   http_port, https_port, capsys)
    finally:
        pebble.stop()


def _lifecycle(target, engine, make_tenant, dns, pebble, tmp_path, wild_ca, http_port, https_port, capsys):
    target.stack["edge"].update(http=f"127.0.0.1:{http_port}", https=f"127.0.0.1:{https_port}")
    target.save(update_fields=["stack"])
    client = engine["client"]
    for version in ("1.0.0", "2.0.0"):
        release_create(version=version, images={"web": echo_app_image(client, version)}, actor=ACTOR)
    first = deploy("1.0.0")
    assert first.status == Deployment.Status.SUCCEEDED, first.error
    shop = make_tenant("oneedge")
    sub = f"{shop.subdomain}.{BASE}"

    # The custom domain's certificate: Pebble reaches the target's edge on port 80, which forwards
    # the challenge to the control plane.
    dns.add_a(CUSTOM, "127.0.0.1")
    domain = Domain.objects.create(tenant=shop, domain=CUSTOM, kind=Domain.Kind.CUSTOM,
                                   status=Domain.Status.VERIFIED)
    queue = django_rq.get_queue("default")
    queue.empty()
    cert = certificate_issue(domain=domain, actor=ACTOR)
    assert cert.status == Certificate.Status.ISSUED, cert.last_error
    # The issuance queued one sync of the targets' edges (and more changes add no second one).
    syncs = [j for j in queue.jobs if j.func_name == "deployments.jobs.target_edges_sync_job"]
    assert len(syncs) == 1
    [result] = edges.target_edges_sync(actor=ACTOR)
    assert (result.target, result.domains, result.error) == (target.name, 1, "")

    roots = tmp_path / "roots.pem"
    roots.write_bytes(pebble.root_pem() + wild_ca.read_bytes())
    for host in (sub, CUSTOM):
        status, head, body = https_get(https_port, host, str(roots))
        # The app saw its colour, the Host asked for, and that the client came over HTTPS.
        assert (status, body) == (200, f"blue {host} https"), head
        assert ("Strict-Transport-Security" in head) == (host == sub)
        redirect = plain_get(http_port, host, "/p?q=1")
        assert redirect[0] == 301 and f"Location: https://{host}:{https_port}/p?q=1" in redirect[1]
        # Shops' hosts never reach the control plane's paths.
        assert https_get(https_port, host, str(roots), "/admin/")[0] == 404
    assert plain_get(http_port, "127.0.0.1", "/healthz")[0] == 200

    # Blue-green under HTTPS load on both hosts.
    with HttpsLoop(https_port, [sub, CUSTOM], str(roots)) as loop:
        second = deploy("2.0.0")
    assert second.status == Deployment.Status.SUCCEEDED, second.error
    assert loop.failures == [] and loop.ok > 10
    assert {f"green {sub} https", f"green {CUSTOM} https"} <= loop.bodies
    assert https_get(https_port, CUSTOM, str(roots))[2] == f"green {CUSTOM} https"

    # Renewal under the same load: a new certificate is served, no request fails.
    before = served_serial(https_port, CUSTOM)
    with HttpsLoop(https_port, [sub, CUSTOM], str(roots)) as loop:
        assert certificate_issue(domain=domain, actor=ACTOR).status == Certificate.Status.ISSUED
        [result] = edges.target_edges_sync(actor=ACTOR)
        assert result.error == ""
        time.sleep(0.3)
    assert loop.failures == [] and loop.ok > 5
    assert served_serial(https_port, CUSTOM) != before
    assert loop.bodies == {f"green {sub} https", f"green {CUSTOM} https"}

    # A config nginx -t refuses never replaces the live one (a corrupt wildcard file).
    from django.conf import settings

    good_key = settings.EDGE_PLATFORM_KEY
    broken = tmp_path / "broken.key"
    broken.write_text("not a key\n")
    settings.EDGE_PLATFORM_KEY = str(broken)
    [result] = edges.target_edges_sync(actor=ACTOR)
    assert "nginx -t refused" in result.error
    assert AuditEvent.objects.filter(action="target_edge.push_failed", target=target.name).exists()
    assert https_get(https_port, sub, str(roots))[0] == 200
    settings.EDGE_PLATFORM_KEY = good_key

    # A removed domain stops being served, and its certificate is gone from the edge.
    assert CUSTOM in edge_files(engine, target)
    domain_remove(domain=Domain.objects.get(domain=CUSTOM), actor=ACTOR)
    call_command("sync_edges")
    assert f"Edges synced: {target.name} (0 custom domain(s))." in capsys.readouterr().out
    with pytest.raises(ssl.SSLError):
        https_get(https_port, CUSTOM, str(roots))
    files = edge_files(engine, target)
    # (the previous generation stays for old workers' late handshakes, without the removed domain)
    assert CUSTOM not in files and "_platform.key" in files and files.count("_platform.key") <= 2
    assert https_get(https_port, sub, str(roots))[2] == f"green {sub} https"
    assert ComposeEngine(Target.objects.get(pk=target.pk)).proxy.current_upstreams()[0].color == "green"
