"""The HTTP ownership check and the CAA walk cannot be turned against the platform: internal
addresses are refused (also after a redirect), a trickling origin hits one deadline, and the CAA
walk is bounded in labels and in time. Real DNS (pebble-challtestsrv) and real HTTP servers."""

import http.server
import socket
import threading
import time

import pytest

from core.audit import Actor
from tenants.domains import services as domains
from tenants.models import Domain
from tests.domains.test_verification import shop

ACTOR = Actor.command("pytest")
S = Domain.Status


class Origin:
    """The tenant's own web server on 127.0.0.1, scripted: token, trickle, or redirect."""

    def __init__(self, mode: str, token: str = "", location: str = "") -> None:
        self.requests: list[str] = []
        self.location = location
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                origin.requests.append(self.path)
                try:
                    if mode == "redirect" and not self.path.startswith("/landed"):
                        self.send_response(302)
                        self.send_header("Location", origin.location)
                        self.end_headers()
                    elif mode == "trickle":
                        self.send_response(200)
                        self.end_headers()
                        stop = time.monotonic() + 20  # bounded: stops by itself
                        while time.monotonic() < stop:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.05)
                    else:
                        self.send_response(200)
                        self.end_headers()
                        self.wfile.write(token.encode())
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tenant(plans, domain_settings):
    domain_settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # the test origins live there
    return shop(plans, "fetchy")


@pytest.fixture
def origin(domain_settings):
    made: list[Origin] = []

    def make(*args, **kwargs) -> Origin:
        made.append(Origin(*args, **kwargs))
        domain_settings.CUSTOM_DOMAIN_HTTP_CHECK_PORT = made[-1].port
        return made[-1]

    yield make
    for o in made:
        o.close()


def test_a_domain_pointing_at_the_metadata_address_is_refused_and_told(tenant, dns_server):
    domain = domains.domain_add(tenant=tenant, domain="metadata.fetch.example", actor=ACTOR)
    dns_server.add_a(domain.domain, "169.254.169.254")
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.VERIFICATION_FAILED
    assert ("HTTP check of metadata.fetch.example: refused: 169.254.169.254 (metadata.fetch.example) is a "
            "cloud metadata (link-local) address; allow it with OUTBOUND_ALLOWED_NETWORKS.") in result.message
    assert domain.status_reason == result.message


def test_a_trickling_origin_hits_the_total_deadline(tenant, dns_server, origin, domain_settings):
    domain_settings.OUTBOUND_TIMEOUT_SECONDS = 0.5
    slow = origin("trickle")
    domain = domains.domain_add(tenant=tenant, domain="trickle.fetch.example", actor=ACTOR)
    dns_server.add_a(domain.domain, "127.0.0.1")
    started = time.monotonic()
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    assert time.monotonic() - started < 10  # the deadline ended it, not the origin's 20 s
    assert "HTTP check of trickle.fetch.example: timed out after 0.5 s." in result.message
    assert slow.requests


def test_a_redirect_to_an_internal_address_is_refused(tenant, dns_server, origin):
    hop = origin("redirect", location="http://169.254.169.254/latest/meta-data/iam/")
    domain = domains.domain_add(tenant=tenant, domain="redirect.fetch.example", actor=ACTOR)
    dns_server.add_a(domain.domain, "127.0.0.1")
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    assert ("HTTP check of redirect.fetch.example: refused: 169.254.169.254 is a cloud metadata"
            in result.message)
    assert len(hop.requests) == 1
    assert Domain.objects.get(pk=domain.pk).ownership_verified_at is None


def test_a_redirect_on_the_origin_is_followed_and_proves_ownership(tenant, dns_server, origin):
    domain = domains.domain_add(tenant=tenant, domain="moved.fetch.example", actor=ACTOR)
    served = origin("redirect", token=domain.verification_token)
    served.location = f"http://moved.fetch.example:{served.port}/landed"
    dns_server.add_a(domain.domain, "127.0.0.1")
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.ownership_verified_at is not None, domain.status_reason
    assert served.requests == [f"/.well-known/platform-verify/{domain.verification_token}", "/landed"]


@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")
def test_the_caa_walk_is_bounded_in_labels(tenant, dns_server):
    # 120 labels: walking all of them would be 119 CAA lookups of up to 3 s each.
    name = "a." * 118 + "caa-deep.example"
    domain = domains.domain_add(tenant=tenant, domain=name, actor=ACTOR)
    domains.domain_verify(domain=domain, actor=ACTOR)
    domain.refresh_from_db()
    assert domain.status == S.VERIFICATION_FAILED
    assert (f"{name} has 120 labels; we check CAA records for names of at most 10 labels: "
            "use a shorter name.") in domain.status_reason
    assert not domain.last_diagnosis["caa_ok"]
    # Few labels but long: the TXT record's name would not fit in DNS; said, not crashed on.
    name = f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 40}.example"
    domain = domains.domain_add(tenant=tenant, domain=name, actor=ACTOR)
    result = domains.domain_verify(domain=domain, actor=ACTOR)
    too_long = f"The TXT record name _platform-verify.{name} would be longer than 253 characters"
    assert too_long in result.message


class SlowDns:
    """A real DNS server in front of the test one that answers each query after ``delay`` s."""

    def __init__(self, upstream: str, delay: float) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream, self.delay = (host, int(port)), delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.nameserver = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.queries = 0
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.running:
            try:
                query, client = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            threading.Thread(target=self._answer, args=(query, client), daemon=True).start()

    def _answer(self, query: bytes, client) -> None:
        time.sleep(self.delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            up.sendto(query, self.upstream)
            try:
                self.sock.sendto(up.recvfrom(4096)[0], client)
            except OSError:
                pass

    def stop(self) -> None:
        self.running = False
        self.sock.close()


def test_the_caa_walk_has_one_deadline(tenant, dns_server, domain_settings):
    name = "a.b.c.d.e.f.caa-slow.example"  # 8 labels: 7 CAA lookups of 0.3 s
    domain = domains.domain_add(tenant=tenant, domain=name, actor=ACTOR)
    dns_server.set_txt(f"_platform-verify.{name}", domain.verification_token)
    dns_server.set_cname(name, "fetchy.platform.test")
    slow = SlowDns(dns_server.nameserver, delay=0.3)
    try:
        domain_settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = [slow.nameserver]
        domain_settings.CUSTOM_DOMAIN_CAA_TIMEOUT_SECONDS = 0.8
        result = domains.domain_verify(domain=domain, actor=ACTOR)
    finally:
        slow.stop()
    domain.refresh_from_db()
    # Inconclusive, like a DNS outage: the status stays, the reason says why, a retry is scheduled.
    assert domain.status == S.PENDING_VERIFICATION
    assert f"the CAA check of {name} took longer than 0.8 s" in result.message
    assert "We will try again automatically." in result.message
    assert slow.queries < 2 + 2 + 7  # TXT, CNAME, then the walk stopped before its 7 lookups
