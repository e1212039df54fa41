"""Every rule for a custom domain name, and the message each refusal gives."""

import pytest

from tenants.domains.services import domain_normalise
from tenants.errors import TenantValidationError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Shop.Example.COM", "shop.example.com"),
        ("  shop.example.com.  ", "shop.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("a-b.c-d.example.org", "a-b.c-d.example.org"),
    ],
)
def test_normalises(raw, expected, settings):
    settings.PLATFORM_BASE_DOMAIN = "platform.test"
    assert domain_normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "Enter a domain name"),
        ("https://shop.example.com", "looks like a URL"),
        ("shop.example.com/path", "looks like a URL"),
        ("*.example.com", "wildcard"),
        ("192.0.2.10", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("2001:db8::1", "IP address"),
        ("shop.example.com:8443", "has a port"),
        ("localhost", "single label"),
        ("shop", "single label"),
        ("under_score.example.com", "not a valid domain name"),
        ("not a domain.com", "use only letters, digits and hyphens between the dots"),
        ("-bad.example.com", "not a valid domain name"),
        ("a" * 64 + ".example.com", "not a valid domain name"),
        (".".join(["abcdefghij"] * 25) + ".com", "not a valid domain name"),
        ("shop.example.123", "numeric top-level"),
        ("platform.test", "platform's own domain"),
        ("evil.platform.test", "platform's own domain"),
        ("EVIL.Platform.Test.", "platform's own domain"),
    ],
)
def test_refuses_with_a_message_that_says_what_to_fix(raw, message, settings):
    settings.PLATFORM_BASE_DOMAIN = "platform.test"
    settings.PLATFORM_ADMIN_HOST = "admin.platform.test"
    with pytest.raises(TenantValidationError, match=message):
        domain_normalise(raw)
