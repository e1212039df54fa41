"""HTTP(S) uptime probes: status, latency and the certificate's expiry read from the handshake.

Each probe connects itself (optionally to a fixed address, like curl --connect-to, so the edge
can be probed for every host), sends the shop's host name as SNI and Host, and never follows
redirects: a 3xx answer counts as up.
"""

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509


@dataclass(frozen=True)
class ProbeOutcome:
    url: str
    ok: bool
    status_code: int | None
    latency_ms: float | None
    error: str
    tls_expires_at: datetime | None


def _expiry(der: bytes | None) -> datetime | None:
    if not der:
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def _peer_expiry_unverified(address: tuple[str, int], host: str, timeout: float) -> datetime | None:
    # The certificate did not verify; read its expiry anyway so the report can say when it ends.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return _expiry(tls.getpeercert(binary_form=True))
    except (OSError, ValueError):
        return None


def probe_url(
    url: str, *, connect_to: str = "", timeout: float = 5.0, ca_file: str = "", verify: bool = True
) -> ProbeOutcome:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = (host, port)
    if connect_to:
        addr, _, addr_port = connect_to.rpartition(":")
        if not addr or not addr_port.isdigit():
            return ProbeOutcome(
                url, False, None, None, f"PROBE_CONNECT_TO entry {connect_to!r} is not host:port", None
            )
        address = (addr.strip("[]"), int(addr_port))
    started = time.perf_counter()
    expires = None
    sock = None
    try:
        sock = socket.create_connection(address, timeout=timeout)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file or None)
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
            expires = _expiry(sock.getpeercert(binary_form=True))
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request(
            "GET",
            parts.path or "/",
            headers={
                "Host": parts.netloc,
                "User-Agent": "platform-uptime-probe/1",
                "Connection": "close",
            },
        )
        response = conn.getresponse()
        response.read(65536)
        status = response.status
        latency = round((time.perf_counter() - started) * 1000, 1)
        ok = 200 <= status < 400
        return ProbeOutcome(url, ok, status, latency, "" if ok else f"HTTP {status}", expires)
    except ssl.SSLCertVerificationError as exc:
        return ProbeOutcome(
            url,
            False,
            None,
            None,
            f"TLS certificate not valid: {exc.verify_message}"[:300],
            _peer_expiry_unverified(address, host, timeout),
        )
    except TimeoutError:
        return ProbeOutcome(url, False, None, None, f"timed out after {timeout:g} s", expires)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return ProbeOutcome(url, False, None, None, f"{type(exc).__name__}: {exc}"[:300], expires)
    finally:
        if sock is not None:
            sock.close()


def days_left(expires: datetime | None, now: datetime | None = None) -> float | None:
    if expires is None:
        return None
    return round((expires - (now or datetime.now(UTC))).total_seconds() / 86400, 2)
