"""core.outbound against real local servers: total deadline, byte cap, refused addresses (also
after a redirect and after DNS resolution through a real DNS server), and the pinned connection."""

import http.server
import ssl
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core import outbound
from tenants.domains import dns_checks
from tests.domains.components import make_tls_files


class Server:
    """A real HTTP(S) server on 127.0.0.1 whose answer is scripted per path; records what it saw."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.seen: list[dict] = []
        self.redirect_to = ""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.seen.append({"path": self.path, "host": self.headers["Host"]})
                if self.path == "/trickle-body":
                    self._trickle(headers_first=True)
                elif self.path == "/trickle-headers":
                    self._trickle(headers_first=False)
                elif self.path == "/big":
                    self.send_response(200)
                    self.send_header("Content-Length", str(50 * 1024 * 1024))
                    self.end_headers()
                    chunk = b"x" * 65536
                    try:
                        for _ in range(800):  # 50 MiB at most; the client hangs up long before
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                elif self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    body = b"hello from " + self.headers["Host"].encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_POST = do_GET  # noqa: N815 (alert deliveries POST)

            def _trickle(self, headers_first: bool) -> None:
                try:
                    if headers_first:
                        self.send_response(200)
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        self.wfile.flush()
                    else:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    stop = time.monotonic() + 20  # bounded: the server stops by itself
                    while time.monotonic() < stop:
                        self.wfile.write(b"x" if headers_first else b"X-Slow: 1\r\n")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made: list[Server] = []

    def make(**kwargs) -> Server:
        made.append(Server(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def loopback_allowed(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    return settings


@pytest.fixture
def dns_resolver(dns_server, settings):
    """The project's own resolver (tenants.domains.dns_checks), pointed at the real test DNS server."""
    settings.CUSTOM_DOMAIN_DNS_NAMESERVERS = [dns_server.nameserver]
    settings.CUSTOM_DOMAIN_DNS_TIMEOUT = 2.0
    yield dns_checks.resolve_addresses
    dns_checks._resolver = None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback"),
        ("::1", "a loopback"),
        ("169.254.169.254", "a cloud metadata (link-local)"),
        ("169.254.10.1", "a link-local"),
        ("fe80::1", "a link-local"),
        ("10.0.0.5", "a private"),
        ("172.16.3.4", "a private"),
        ("192.168.1.1", "a private"),
        ("fd12::1", "a private"),
        ("100.64.1.1", "a shared (CGNAT, RFC 6598)"),
        ("0.0.0.0", "an unspecified"),
        ("::", "an unspecified"),
        ("224.0.0.1", "a multicast"),
        ("ff02::1", "a multicast"),
        ("240.0.0.1", "a reserved"),
        ("::ffff:10.0.0.5", "a private"),
        ("::ffff:169.254.169.254", "a cloud metadata (link-local)"),
        ("2002:7f00:1::", "a loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:5", "a private"),  # NAT64 around 10.0.0.5
        ("::127.0.0.1", "a reserved"),  # IPv4-compatible (deprecated)
        ("192.0.2.7", "a special-purpose (not globally routable)"),  # documentation range
        ("198.18.0.1", "a special-purpose (not globally routable)"),  # benchmarking
    ],
)
def test_internal_addresses_are_refused_with_a_reason_and_the_fix(address, kind, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(outbound.OutboundRefused) as refused:
        outbound.check_address(address)
    fix = "allow it with OUTBOUND_ALLOWED_NETWORKS"
    assert str(refused.value) == f"refused: {address} is {kind} address; {fix}"


def test_public_addresses_pass_and_the_allow_list_is_checked(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"):
        outbound.check_address(address)
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    outbound.check_address("10.0.0.5")
    outbound.check_address("::ffff:10.0.0.5")  # the IPv4 inside a mapped address is what counts
    with pytest.raises(outbound.OutboundRefused, match="172.16.0.1 is a private"):
        outbound.check_address("172.16.0.1")
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/33"]
    with pytest.raises(ImproperlyConfigured, match="OUTBOUND_ALLOWED_NETWORKS: .*give CIDRs like"):
        outbound.check_address("10.0.0.5")


def test_loopback_is_refused_before_anything_is_sent_and_allowed_when_listed(server, settings):
    srv = server()
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(outbound.OutboundRefused, match=r"refused: 127.0.0.1 is a loopback address"):
        outbound.fetch(f"http://127.0.0.1:{srv.port}/")
    assert srv.seen == []
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    response = outbound.fetch(f"http://127.0.0.1:{srv.port}/")
    assert response.status == 200 and response.address == "127.0.0.1"


def test_a_server_that_trickles_forever_hits_the_total_deadline(server, loopback_allowed):
    srv = server()
    for path in ("/trickle-body", "/trickle-headers"):
        started = time.monotonic()
        with pytest.raises(outbound.OutboundTimeout, match=r"^timed out after 0.5 s$"):
            # Each byte arrives well within any per-read timeout; only a total deadline stops it.
            outbound.fetch(f"http://127.0.0.1:{srv.port}{path}", timeout=0.5)
        assert time.monotonic() - started < 5  # the deadline, not the server's 20 s, ended it


def test_a_body_larger_than_the_cap_is_cut_at_the_cap(server, loopback_allowed):
    srv = server()
    response = outbound.fetch(f"http://127.0.0.1:{srv.port}/big", max_bytes=1000)
    assert response.truncated and len(response.body) == 1000 and response.status == 200
    loopback_allowed.OUTBOUND_MAX_BYTES = 70000  # the setting is the default cap
    response = outbound.fetch(f"http://127.0.0.1:{srv.port}/big")
    assert response.truncated and len(response.body) == 70000
    small = outbound.fetch(f"http://127.0.0.1:{srv.port}/small")
    assert not small.truncated and small.text == f"hello from 127.0.0.1:{srv.port}"


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a cloud metadata"),
        ("http://127.0.0.2:{port}/", "refused: 127.0.0.2 is a loopback address"),
        ("http://[::ffff:10.0.0.5]/", "refused: ::ffff:10.0.0.5 is a private address"),
        ("file:///etc/passwd", "'file:///etc/passwd' is not an http(s) URL"),
    ],
)
def test_each_redirect_hop_is_checked_again(server, loopback_allowed, location, message):
    srv = server()
    srv.redirect_to = location.format(port=srv.port)
    with pytest.raises(outbound.OutboundError) as refused:
        outbound.fetch(f"http://127.0.0.1:{srv.port}/redirect")
    assert message in str(refused.value)
    assert [s["path"] for s in srv.seen] == ["/redirect"]


def test_redirects_are_followed_up_to_the_limit(server, loopback_allowed):
    srv = server()
    srv.redirect_to = f"http://127.0.0.1:{srv.port}/landed"
    response = outbound.fetch(f"http://127.0.0.1:{srv.port}/redirect")
    assert response.status == 200 and response.url.endswith("/landed")
    srv.redirect_to = "/redirect-again"
    with pytest.raises(outbound.OutboundError, match=r"more than 2 redirect\(s\)"):
        outbound.fetch(f"http://127.0.0.1:{srv.port}/redirect", max_redirects=2)
    # Not followed at all with 0 (probes, deliveries): the 3xx is the answer.
    assert outbound.fetch(f"http://127.0.0.1:{srv.port}/redirect", max_redirects=0).status == 302


def test_a_name_resolving_to_loopback_is_refused_unless_allowed(server, dns_server, dns_resolver, settings):
    dns = dns_server
    srv = server()
    dns.add_a("internal.outbound.test", "127.0.0.1")
    dns.add_a("metadata.outbound.test", "169.254.169.254")
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    url = f"http://internal.outbound.test:{srv.port}/"
    with pytest.raises(outbound.OutboundRefused,
                       match=r"^refused: 127.0.0.1 \(internal.outbound.test\) is a loopback address"):
        outbound.fetch(url, resolve=dns_resolver)
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with pytest.raises(outbound.OutboundRefused, match=r"169.254.169.254 \(metadata.outbound.test\)"):
        outbound.fetch(f"http://metadata.outbound.test:{srv.port}/", resolve=dns_resolver)
    response = outbound.fetch(url, resolve=dns_resolver)
    assert response.status == 200 and srv.seen[-1]["host"] == f"internal.outbound.test:{srv.port}"
    # A redirect to a name is resolved by the same resolver and checked the same way.
    srv.redirect_to = f"http://metadata.outbound.test:{srv.port}/"
    with pytest.raises(outbound.OutboundRefused, match="169.254.169.254"):
        outbound.fetch(f"{url}redirect", resolve=dns_resolver)
    dns.clear_a("internal.outbound.test")
    dns.clear_a("metadata.outbound.test")


def test_the_connection_is_pinned_to_the_checked_address(server, loopback_allowed, tmp_path):
    """A rebinding resolver: the first answer passes the check, every later one is internal. The
    fetch reaches the first address, with the name as Host, SNI and certificate name: the client
    connected to the address it checked and never asked again."""
    ca, cert, key = make_tls_files(tmp_path, ["pinned.test"])
    srv = server(tls=(cert, key))
    answers = iter([["127.0.0.1"]] + [["10.0.0.5"]] * 10)
    asked: list[str] = []

    def rebinding(name: str) -> list[str]:
        asked.append(name)
        return next(answers)

    response = outbound.fetch(f"https://pinned.test:{srv.port}/", resolve=rebinding, ca_file=str(ca))
    assert response.status == 200 and response.address == "127.0.0.1"
    assert response.text == f"hello from pinned.test:{srv.port}"
    assert response.peer_cert  # the verified certificate, for probes' expiry
    assert asked == ["pinned.test"]
    # The next fetch gets the rebound answer and is refused; nothing reaches 10.0.0.5.
    with pytest.raises(outbound.OutboundRefused, match="10.0.0.5"):
        outbound.fetch(f"https://pinned.test:{srv.port}/", resolve=rebinding, ca_file=str(ca))
    # Certificate verification is for the name, not the address we connected to.
    with pytest.raises(outbound.OutboundTLSError, match="TLS certificate not valid") as bad:
        outbound.fetch(f"https://other.test:{srv.port}/", resolve=lambda _: ["127.0.0.1"], ca_file=str(ca))
    assert bad.value.address == ("127.0.0.1", srv.port)
