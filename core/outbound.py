"""The one guarded HTTP client for every URL or name a tenant (or a staff-edited channel) controls.

Rules (docs/security.md, "Outbound fetches"):
- the name is resolved here (by the caller's resolver or the system's), every address is checked
  (loopback, link-local and cloud metadata, private, CGNAT, unspecified, multicast, reserved and
  non-public addresses are refused, also inside IPv4-mapped, 6to4 and NAT64 IPv6 addresses),
  unless it falls in OUTBOUND_ALLOWED_NETWORKS;
- the connection is pinned: the socket goes to the checked address, while the Host header, TLS
  SNI and certificate verification use the name, so a DNS rebind after the check changes nothing;
- one total deadline (connect, TLS, request, headers and body together), not a per-read timeout;
- the body is streamed and cut at a byte cap (``Response.truncated`` says so);
- redirects are followed by hand for GET and HEAD only, at most ``max_redirects``, each hop
  resolved and checked by the same rules.

Built on the standard library (socket, ssl, http.client), not requests/urllib3: both resolve the
name at connect time and apply timeouts per socket operation, and the deadline and the pinning need
the socket itself. requests-hardened allows loopback on or off only (no CIDR allow-list, no
injectable resolver) and has neither a byte cap nor a total deadline.
"""

import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.errors import PlatformError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[str]]

REDIRECTS = {301, 302, 303, 307, 308}
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]


class OutboundError(PlatformError):
    """The fetch did not complete; the message says why, in words a tenant can act on."""


class OutboundRefused(OutboundError):
    """The target address is not allowed (SSRF protection). Nothing was sent to it."""


class OutboundTimeout(OutboundError):
    """The total deadline passed."""


class OutboundTLSError(OutboundError):
    """The server's certificate did not verify for the name. ``address`` is where we connected."""

    def __init__(self, message: str, address: tuple[str, int]) -> None:
        super().__init__(message)
        self.address = address


@dataclass(frozen=True)
class Response:
    url: str  # the last URL fetched (after redirects)
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes  # at most max_bytes
    truncated: bool  # the server sent more than max_bytes; the rest was not read
    address: str  # the checked IP address the connection went to
    elapsed_ms: float
    peer_cert: bytes | None = field(default=None, repr=False)  # DER, for https

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    entries = [n.strip() for n in settings.OUTBOUND_ALLOWED_NETWORKS if n.strip()]
    try:
        return [ipaddress.ip_network(n, strict=False) for n in entries]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"OUTBOUND_ALLOWED_NETWORKS: {exc} (give CIDRs like 127.0.0.1/32)"
        ) from None


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: Address) -> str | None:
    """Why ``ip`` is refused ("private" ...), or None when it is a public address."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip in METADATA:
        return "cloud metadata (link-local)"
    if ip.is_link_local:
        return "link-local"
    if ip in CGNAT:
        return "shared (CGNAT, RFC 6598)"
    if ip.is_multicast:
        return "multicast"
    if any(ip in net for net in PRIVATE if net.version == ip.version):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "special-purpose (not globally routable)"
    return None


def check_address(address: str, *, name: str = "") -> Address:
    """The parsed address, or OutboundRefused with a message that says how to allow it."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = _embedded_v4(ip)
    networks = _allowed_networks()
    if any(candidate in net for candidate in (ip, inner) if candidate is not None for net in networks
           if candidate.version == net.version):
        return ip
    kind = (_kind(inner) if inner is not None else None) or _kind(ip)
    if kind is None:
        return ip
    shown = f"{address} ({name})" if name and name != address else address
    article = "an" if kind[0] in "aeiou" else "a"
    raise OutboundRefused(
        f"refused: {shown} is {article} {kind} address; allow it with OUTBOUND_ALLOWED_NETWORKS"
    )


def explicitly_allowed(address: str) -> bool:
    """Whether ``address`` falls in OUTBOUND_ALLOWED_NETWORKS: a test or private deployment's own
    network (webhooks allow plain http:// only there)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    inner = _embedded_v4(ip)
    return any(candidate in net for candidate in (ip, inner) if candidate is not None
               for net in _allowed_networks() if candidate.version == net.version)


def system_resolve(host: str) -> list[str]:
    """The system resolver (getaddrinfo), addresses in its order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _DeadlineReader(io.RawIOBase):
    """Reads from the socket, each read bounded by the time left until the deadline."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self._sock, self._deadline, self._timeout = sock, deadline, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        _settimeout(self._sock, self._deadline, self._timeout)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise OutboundTimeout(f"timed out after {self._timeout:g} s") from None


class _DeadlineSocket:
    """What http.client needs of a socket (sendall, makefile, close), under one total deadline."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self.sock, self._deadline, self._timeout = sock, deadline, timeout

    def sendall(self, data: bytes) -> None:
        _settimeout(self.sock, self._deadline, self._timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise OutboundTimeout(f"timed out after {self._timeout:g} s") from None

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self._deadline, self._timeout))

    def close(self) -> None:
        pass  # http.client closes early when the server will close; the reader still needs it


def _settimeout(sock: socket.socket, deadline: float, timeout: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutboundTimeout(f"timed out after {timeout:g} s")
    sock.settimeout(left)


def _target(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundError(f"{url!r} is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundError(f"{url!r} has an invalid port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def _addresses(host: str, resolve: Resolver | None, connect_to: str) -> list[tuple[str, int | None]]:
    """The checked addresses to connect to (port None: the URL's), all checked or refused."""
    if connect_to:
        addr, _, port = connect_to.rpartition(":")
        if not addr or not port.isdigit():
            raise OutboundError(f"connect-to entry {connect_to!r} is not host:port")
        addr = addr.strip("[]")
        try:
            check_address(addr, name=host)
        except ValueError:
            raise OutboundError(f"connect-to entry {connect_to!r} must be an IP address and a port") from None
        return [(addr, int(port))]
    try:
        ipaddress.ip_address(host)
        found: Sequence[str] = [host]
    except ValueError:
        found = (resolve or system_resolve)(host)
    if not found:
        raise OutboundError(f"cannot resolve {host}: it has no address records")
    for address in found:
        check_address(address, name=host)  # one refused address refuses the name
    return [(address, None) for address in found]


def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    resolve: Resolver | None = None,
    connect_to: str = "",
    timeout: float | None = None,
    max_bytes: int | None = None,
    max_redirects: int | None = None,
    ca_file: str = "",
    verify: bool = True,
) -> Response:
    """Fetch ``url`` under the rules above. ``timeout`` is the total deadline (seconds).

    ``resolve``: the resolver for names (default: the system's). ``connect_to`` ("ip:port", like
    curl --connect-to) sends the first request to that address instead; it is checked too.
    """
    timeout = settings.OUTBOUND_TIMEOUT_SECONDS if timeout is None else timeout
    max_bytes = settings.OUTBOUND_MAX_BYTES if max_bytes is None else max_bytes
    max_redirects = settings.OUTBOUND_MAX_REDIRECTS if max_redirects is None else max_redirects
    started = time.monotonic()
    deadline = started + timeout
    for hop in range(max_redirects + 1):
        response = _fetch_once(url, method, body, headers or {}, resolve, connect_to if hop == 0 else "",
                               deadline, timeout, max_bytes, ca_file, verify, started)
        location = response.headers.get("location")
        if response.status not in REDIRECTS or not location or method not in ("GET", "HEAD"):
            return response
        if hop == max_redirects:
            if max_redirects:
                raise OutboundError(f"more than {max_redirects} redirect(s) from {url}")
            return response
        url = urljoin(response.url, location)
    raise AssertionError("unreachable")


def _fetch_once(url: str, method: str, body: bytes | None, headers: dict[str, str],
                resolve: Resolver | None, connect_to: str, deadline: float, timeout: float,
                max_bytes: int, ca_file: str, verify: bool, started: float) -> Response:
    scheme, host, port, path = _target(url)
    candidates = _addresses(host, resolve, connect_to)
    sock, address = _connect(candidates, port, deadline, timeout)
    peer_cert = None
    try:
        if scheme == "https":
            context = ssl.create_default_context(cafile=ca_file or None)
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            _settimeout(sock, deadline, timeout)
            try:
                # The SNI and the name checked against the certificate are the URL's, not the IP.
                sock = context.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                raise OutboundTLSError(f"TLS certificate not valid: {exc.verify_message}", address) from None
            except TimeoutError:
                raise OutboundTimeout(f"timed out after {timeout:g} s") from None
            peer_cert = sock.getpeercert(binary_form=True)
        default = 443 if scheme == "https" else 80
        conn = http.client.HTTPConnection(host, port)
        conn.sock = _DeadlineSocket(sock, deadline, timeout)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if port == default else f"{host}:{port}")
        for name, value in {"User-Agent": "platform-outbound/1", "Connection": "close", **headers}.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        chunks, size, truncated = [], 0, False
        while True:
            chunk = response.read(min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                truncated = True
                break
        return Response(
            url=url,
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=b"".join(chunks)[:max_bytes],
            truncated=truncated,
            address=address[0],
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            peer_cert=peer_cert,
        )
    except (http.client.HTTPException, OSError) as exc:  # OSError: resets, TLS errors ...
        if time.monotonic() >= deadline:
            raise OutboundTimeout(f"timed out after {timeout:g} s") from None
        raise OutboundError(f"{host}: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        sock.close()


def _connect(candidates: list[tuple[str, int | None]], port: int, deadline: float,
             timeout: float) -> tuple[socket.socket, tuple[str, int]]:
    """A socket connected to the first reachable checked address (never to anything else)."""
    error: OSError | None = None
    for address, fixed_port in candidates[:2]:
        target = (address, fixed_port or port)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return socket.create_connection(target, timeout=left), target
        except TimeoutError:
            raise OutboundTimeout(f"timed out after {timeout:g} s") from None
        except OSError as exc:
            error = exc
    if error is None:
        raise OutboundTimeout(f"timed out after {timeout:g} s")
    raise OutboundError(f"cannot connect to {candidates[0][0]}: {type(error).__name__}: {error}"[:300])
