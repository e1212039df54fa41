"""The client's address, as far as the platform can trust it.

REMOTE_ADDR is the peer that connected. Only when that peer is one of TRUSTED_PROXIES is
X-Forwarded-For read, right to left, skipping every trusted proxy: the first address that is not
a trusted proxy is the client. Entries to its left were written by the client itself and are
never believed. With TRUSTED_PROXIES empty (the default) X-Forwarded-For is ignored entirely.

X-Forwarded-Proto (Django's SECURE_PROXY_SSL_HEADER: "this request came over HTTPS") follows the
same rule: ``ProxyHeadersMiddleware`` drops it unless the peer is a trusted proxy.

Everything that decides by address (the /metrics allow-list, /readyz details, the edge's TLS ask
endpoint, login throttling) uses ``client_ip`` so there is one rule to audit.
"""

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...], setting: str) -> tuple[Network, ...]:
    parsed = []
    for cidr in cidrs:
        try:
            parsed.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{setting} entry {cidr!r} is not an IP address or network; "
                "write e.g. 10.0.0.5 or 10.0.0.0/8."
            ) from None
    return tuple(parsed)


def _address(text: str) -> Address | None:
    """An address from a header entry or REMOTE_ADDR ("1.2.3.4", "[::1]", "1.2.3.4:5678"); None if not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:1.2.3.4) is the IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def address_in(address: str, cidrs: Iterable[str], *, setting: str = "the allow-list") -> bool:
    """True when ``address`` lies in one of ``cidrs``; an empty or malformed address never does."""
    parsed = _address(address) if address else None
    if parsed is None:
        return False
    return any(parsed in net for net in _networks(tuple(cidrs), setting))


def _trusted(address: Address) -> bool:
    return any(address in net for net in _networks(tuple(settings.TRUSTED_PROXIES), "TRUSTED_PROXIES"))


def client_ip(request: HttpRequest) -> str:
    """The client's address, or "" when it cannot be told (a malformed forwarded entry).

    "" matches no allow-list, so an unreadable chain is treated as a stranger.
    """
    peer = _address(request.META.get("REMOTE_ADDR", ""))
    if peer is None:
        return ""
    if not _trusted(peer):
        return str(peer)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return ""
        client = address
        if not _trusted(address):
            break
    # Every hop trusted: the leftmost is where the request started (a proxy asking for itself).
    return str(client)


class ProxyHeadersMiddleware:
    """Drops X-Forwarded-Proto from a peer that is not a trusted proxy, before anything reads it:
    otherwise any client reaching the app directly could have a plain-HTTP request taken for HTTPS."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if "HTTP_X_FORWARDED_PROTO" in request.META:
            peer = _address(request.META.get("REMOTE_ADDR", ""))
            if peer is None or not _trusted(peer):
                del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)
