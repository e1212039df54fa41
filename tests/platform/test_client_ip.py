"""core.clientip: X-Forwarded-For is believed only from TRUSTED_PROXIES, read right to left."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from core.clientip import address_in, client_ip

EDGE = "10.0.0.5"


def request(peer: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@override_settings(TRUSTED_PROXIES=[])
def test_without_trusted_proxies_the_peer_is_the_client():
    assert client_ip(request("203.0.113.9")) == "203.0.113.9"
    # A spoofed header changes nothing.
    assert client_ip(request("203.0.113.9", "127.0.0.1")) == "203.0.113.9"
    assert client_ip(request("127.0.0.1", "203.0.113.9")) == "127.0.0.1"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/24", "127.0.0.1/32"])
def test_forwarded_for_is_read_right_to_left_skipping_trusted_proxies():
    # The edge appended the address it saw; whatever the client wrote to the left is ignored.
    assert client_ip(request(EDGE, "127.0.0.1, 198.51.100.7")) == "198.51.100.7"
    assert client_ip(request(EDGE, "198.51.100.7")) == "198.51.100.7"
    # Two trusted hops (a load balancer, then the edge): the first untrusted address from the right.
    assert client_ip(request(EDGE, "198.51.100.7, 10.0.0.9")) == "198.51.100.7"
    # Several headers are joined by the server with commas; spaces and ports are tolerated.
    assert client_ip(request(EDGE, " 198.51.100.7:4431 ,10.0.0.9")) == "198.51.100.7"
    assert client_ip(request(EDGE, "[2001:db8::1]:443")) == "2001:db8::1"
    # An untrusted peer's header is never read, even if it names a trusted address.
    assert client_ip(request("198.51.100.7", "10.0.0.9")) == "198.51.100.7"
    # The proxy asking for itself (no header, or only trusted hops) is the proxy.
    assert client_ip(request(EDGE)) == EDGE
    assert client_ip(request(EDGE, "127.0.0.1")) == "127.0.0.1"
    # IPv4 seen through an IPv6 socket is the IPv4 address.
    assert client_ip(request("::ffff:198.51.100.7")) == "198.51.100.7"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/24"])
def test_an_unreadable_chain_is_nobody():
    # Garbage where the client's address should be: unknown, which no allow-list matches.
    assert client_ip(request(EDGE, "127.0.0.1, not-an-ip")) == ""
    assert client_ip(request(EDGE, "not-an-ip, 10.0.0.9")) == ""
    assert not address_in("", ["0.0.0.0/0"])
    assert client_ip(request("")) == ""


def test_a_malformed_network_names_the_setting():
    with override_settings(TRUSTED_PROXIES=["10.0.0.0/33"]):
        with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES entry '10.0.0.0/33'"):
            client_ip(request(EDGE, "198.51.100.7"))
    with pytest.raises(ImproperlyConfigured, match="METRICS_ALLOWED_IPS entry 'localhost'"):
        address_in("127.0.0.1", ["localhost"], setting="METRICS_ALLOWED_IPS")


def _scheme_seen(request) -> bool:
    from core.clientip import ProxyHeadersMiddleware

    return ProxyHeadersMiddleware(lambda r: r.is_secure())(request)


@override_settings(
    TRUSTED_PROXIES=["10.0.0.0/24"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
)
def test_x_forwarded_proto_is_believed_only_from_a_trusted_proxy():
    rf = RequestFactory()
    assert _scheme_seen(rf.get("/", REMOTE_ADDR="10.0.0.7", HTTP_X_FORWARDED_PROTO="https")) is True
    # A client reaching the app directly cannot have plain HTTP taken for HTTPS.
    assert _scheme_seen(rf.get("/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")) is False
    assert _scheme_seen(rf.get("/", REMOTE_ADDR="not-an-address", HTTP_X_FORWARDED_PROTO="https")) is False
