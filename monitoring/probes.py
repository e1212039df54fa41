"""HTTP(S) uptime probes: status, latency and the certificate's expiry read from the handshake.

Each probe goes through core.outbound (optionally to a fixed address, like curl --connect-to, so
the edge can be probed for every host; that address must pass the same checks, so a loopback edge
needs OUTBOUND_ALLOWED_NETWORKS), sends the shop's host name as SNI and Host, and never follows
redirects: a 3xx answer counts as up.
"""

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509

from core import outbound


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
    """One probe through core.outbound: the address (resolved, or ``connect_to``) is checked and
    pinned, ``timeout`` is the total deadline, the body read is capped. A refused address is
    reported as "refused: <reason>" only: no status, latency or certificate of what is there."""
    host = urlsplit(url).hostname or ""
    try:
        response = outbound.fetch(
            url,
            connect_to=connect_to,
            timeout=timeout,
            max_redirects=0,
            max_bytes=65536,
            headers={"User-Agent": "platform-uptime-probe/1"},
            ca_file=ca_file,
            verify=verify,
        )
    except outbound.OutboundTLSError as exc:
        return ProbeOutcome(url, False, None, None, str(exc)[:300],
                            _peer_expiry_unverified(exc.address, host, timeout))
    except outbound.OutboundError as exc:
        message = str(exc).replace("connect-to entry", "PROBE_CONNECT_TO entry")
        return ProbeOutcome(url, False, None, None, message[:300], None)
    status = response.status
    ok = 200 <= status < 400
    return ProbeOutcome(url, ok, status, response.elapsed_ms, "" if ok else f"HTTP {status}",
                        _expiry(response.peer_cert))


def days_left(expires: datetime | None, now: datetime | None = None) -> float | None:
    if expires is None:
        return None
    return round((expires - (now or datetime.now(UTC))).total_seconds() / 86400, 2)
