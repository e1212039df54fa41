"""The nginx edge for real: render, nginx -t, atomic swap, reload, last good config kept."""

import socket
import ssl

import pytest
import requests
from cryptography import x509
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from core.crypto import secret_encrypt
from core.models import AuditEvent
from tenants.domains import edge
from tenants.models import AcmeChallenge, Certificate, Domain
from tests.conftest import TEST_ACTOR
from tests.domains.components import make_tls_files
from tests.domains.test_verification import shop

S = Domain.Status


def active_domain(plans, tmp_path, name: str, subdomain: str) -> tuple[Domain, bytes]:
    """An active custom domain whose certificate comes from a throwaway CA (Pebble is tested apart)."""
    tenant = shop(plans, subdomain)
    ca, cert_path, key_path = make_tls_files(tmp_path / name, [name])
    domain = Domain.objects.create(tenant=tenant, domain=name, kind=Domain.Kind.CUSTOM, status=S.ACTIVE)
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    Certificate.objects.create(
        domain=domain, status=Certificate.Status.ISSUED, not_after=leaf.not_valid_after_utc,
        chain_encrypted=secret_encrypt(cert_path.read_bytes() + ca.read_bytes()),
        key_encrypted=secret_encrypt(key_path.read_bytes()), issued_at=timezone.now(),
    )
    return domain, ca.read_bytes()


def served_certificate(port: int, server_name: str) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.mark.parametrize("mode", ["per_domain", "shared"])
def test_render_swaps_in_and_reloads_and_serves_each_domain_its_certificate(
    plans, domain_settings, nginx_edge, tmp_path, mode
):
    settings = domain_settings
    settings.EDGE_TLS_MODE = mode
    from tests.domains.components import wait_until

    # A worker is forked as root and drops to nobody a moment later: wait for that, or time out.
    wait_until(lambda: nginx_edge.worker_users() == {"nobody"}, "nginx workers running as nobody", 10)
    one, _ = active_domain(plans, tmp_path, "one.edge.example", "edge-one")
    two, _ = active_domain(plans, tmp_path, "two.edge.example", "edge-two")
    Domain.objects.create(tenant=one.tenant, domain="pending.edge.example", kind=Domain.Kind.CUSTOM,
                          status=S.PENDING_VERIFICATION)
    result = edge.edge_render(actor=TEST_ACTOR)
    assert result.changed and result.reloaded and result.domains == 2
    config = (settings.EDGE_DIR / "nginx.conf").read_text()
    assert "one.edge.example" in config and "pending.edge.example" not in config
    if mode == "per_domain":
        assert "server_name one.edge.example;" in config
    else:
        assert "server_name one.edge.example two.edge.example;" in config and "$ssl_server_name" in config
    assert (settings.EDGE_DIR / "nginx.conf.last-good").exists()
    https = settings.EDGE_HTTPS_PORT

    def names_served(name):
        cert = served_certificate(https, name)
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)

    wait_until(lambda: names_served("one.edge.example") == ["one.edge.example"], "reload to take effect")
    assert names_served("two.edge.example") == ["two.edge.example"]
    key = settings.EDGE_DIR / "certs" / "one.edge.example.key"
    assert oct(key.stat().st_mode & 0o777) == ("0o600" if mode == "per_domain" else "0o640")
    if mode == "shared":
        # A name that is not listed never gets a certificate: its handshake is refused.
        with pytest.raises(ssl.SSLError):
            served_certificate(https, "stranger.example")

    # Plain HTTP goes to HTTPS (on the edge's own port); an unknown host gets nothing.
    http = f"http://127.0.0.1:{settings.EDGE_HTTP_PORT}"
    # (old workers may still take a connection or two while the reload finishes)
    redirect = wait_until(
        lambda: (r := requests.get(f"{http}/p?q=1", headers={"Host": "one.edge.example"},
                                   allow_redirects=False)).status_code == 301 and r,
        "the HTTP redirect",
    )
    assert redirect.headers["Location"] == f"https://one.edge.example:{https}/p?q=1"
    assert requests.get(http, headers={"Host": "stranger.example"}).status_code == 404

    # Nothing changed: nothing rewritten, no reload.
    again = edge.edge_render(actor=TEST_ACTOR)
    assert not again.changed and not again.reloaded
    # A removed domain leaves the config on the next render.
    two.delete()
    assert edge.edge_render(actor=TEST_ACTOR).domains == 1
    assert "two.edge.example" not in (settings.EDGE_DIR / "nginx.conf").read_text()
    # ...and its key no longer lies around on the edge.
    assert not (settings.EDGE_DIR / "certs" / "two.edge.example.key").exists()
    assert (settings.EDGE_DIR / "certs" / "one.edge.example.key").exists()


def test_a_config_nginx_rejects_never_goes_live(plans, domain_settings, nginx_edge, tmp_path):
    settings = domain_settings
    good, _ = active_domain(plans, tmp_path, "good.edge.example", "edge-good")
    edge.edge_render(actor=TEST_ACTOR)
    live = (settings.EDGE_DIR / "nginx.conf").read_text()
    active_domain(plans, tmp_path, "broken.edge.example", "edge-broken")
    edge.edge_render(actor=TEST_ACTOR, names=["good.edge.example"])
    # A corrupt certificate file makes `nginx -t` fail on the next render.
    edge.certificate_files_write("broken.edge.example", b"not a certificate\n", b"not a key\n")
    with pytest.raises(edge.EdgeConfigInvalid, match="nginx -t rejected the new edge config .* unchanged"):
        edge.edge_render(actor=TEST_ACTOR)
    assert (settings.EDGE_DIR / "nginx.conf").read_text() == live
    assert not (settings.EDGE_DIR / "nginx.conf.candidate").exists()
    event = AuditEvent.objects.get(action="edge.render_failed")
    assert "broken.edge.example" in event.details["error"]
    # The edge still serves the last good config.
    cert = served_certificate(settings.EDGE_HTTPS_PORT, "good.edge.example")
    assert cert.subject.rfc4514_string() == "CN=good.edge.example"
    with pytest.raises(CommandError, match="nginx -t rejected"):
        call_command("render_edge_config", "--check")


def test_render_edge_config_command(plans, domain_settings, nginx_edge, tmp_path, capsys):
    active_domain(plans, tmp_path, "cmd.edge.example", "edge-cmd")
    call_command("render_edge_config", "--check")
    assert "Edge config valid for 1 domain(s); it differs from the live one." in capsys.readouterr().out
    assert "cmd.edge.example" not in (domain_settings.EDGE_DIR / "nginx.conf").read_text()
    call_command("render_edge_config")
    assert "written for 1 domain(s) and reloaded" in capsys.readouterr().out
    call_command("render_edge_config")
    assert "Edge config unchanged (1 domain(s))." in capsys.readouterr().out


def test_reload_failure_is_reported(plans, domain_settings, edge_settings, tmp_path):
    edge_settings.EDGE_RELOAD_COMMAND = "false"
    active_domain(plans, tmp_path, "reload.edge.example", "edge-reload")
    with pytest.raises(edge.EdgeReloadFailed, match="reload failed"):
        edge.edge_render(actor=TEST_ACTOR)
    assert AuditEvent.objects.filter(action="edge.reload_failed").exists()


def test_tls_ask_endpoint(plans, domain_settings):
    tenant = shop(plans, "asker")
    for name, status in [("active.ask.example", S.ACTIVE), ("verified.ask.example", S.VERIFIED),
                         ("pending.ask.example", S.PENDING_VERIFICATION), ("moved.ask.example", S.MOVED)]:
        Domain.objects.create(tenant=tenant, domain=name, kind=Domain.Kind.CUSTOM, status=status)
    domain_settings.EDGE_ASK_ALLOWED_IPS = ["127.0.0.1/32"]  # the test client is the edge here
    client = Client(HTTP_HOST="admin.platform.test")
    ask = "/internal/tls/ask"
    assert client.get(ask, {"domain": "ACTIVE.ask.example."}).status_code == 200
    assert client.get(ask, {"domain": "verified.ask.example"}).status_code == 200
    assert client.get(ask, {"domain": "pending.ask.example"}).status_code == 404
    assert client.get(ask, {"domain": "moved.ask.example"}).status_code == 404
    assert client.get(ask, {"domain": "unknown.example"}).status_code == 404
    # Platform subdomains are not custom domains; bad input is a 400 with the reason.
    assert client.get(ask, {"domain": "asker.platform.test"}).status_code == 400
    bad = client.get(ask, {"domain": "1.2.3.4"})
    assert bad.status_code == 400 and b"IP address" in bad.content
    assert client.get(ask).status_code == 400


def test_acme_answers_for_unrouted_hosts_only_what_is_stored(plans, domain_settings):
    tenant = shop(plans, "known")
    domain = Domain.objects.create(tenant=tenant, domain="wk.example", kind=Domain.Kind.CUSTOM,
                                   status=S.PENDING_VERIFICATION, verification_token="tok-123")
    AcmeChallenge.objects.create(token="acme-tok", domain="wk.example", key_authorization="acme-tok.thumb")
    client = Client(HTTP_HOST="wk.example")
    answer = client.get("/.well-known/acme-challenge/acme-tok")
    assert answer.status_code == 200 and answer.content == b"acme-tok.thumb"
    assert client.get("/.well-known/acme-challenge/wrong").status_code == 404
    # Ownership tokens are never served by the platform (anyone could claim a name aimed at us).
    assert client.get("/.well-known/platform-verify/tok-123").status_code in (400, 404)
    # Another host does not get this domain's answers; the domain itself does not route yet.
    other = Client(HTTP_HOST="other.example")
    assert other.get("/.well-known/acme-challenge/acme-tok").status_code == 404
    assert client.get("/").status_code in (400, 404)
    assert domain.status == S.PENDING_VERIFICATION
