"""The target edge's config (one renderer), its stack rules, and the coalesced sync requests."""

import subprocess

import django_rq
import pytest

from core.audit import Actor
from deployments import edges
from deployments.stack import EdgeTls, default_stack, render_proxy_config, stack_problems
from tenants.domains.nginx_conf import SHOP_REFUSED
from tenants.signals import edge_changed
from tests.deployments.images import make_stack
from tests.domains.components import make_tls_files

ACTOR = Actor.command("pytest")
SYNC = "deployments.jobs.target_edges_sync_job"


def queued_syncs() -> int:
    return sum(j.func_name == SYNC for j in django_rq.get_queue("default").jobs)


def test_a_burst_of_changes_queues_one_sync_and_a_change_after_it_starts_queues_the_next(
    db, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(1000):
            edge_changed.send(sender=None, actor=ACTOR, reason=f"certificate issued: d{i}.example")
    assert queued_syncs() == 1
    # The sync (no compose target has public listeners here) clears the request first...
    assert edges.target_edges_sync(actor=ACTOR) == []
    # ...so a change made while it runs is not lost: it queues the next one.
    with django_capture_on_commit_callbacks(execute=True):
        edge_changed.send(sender=None, actor=ACTOR, reason="domain removed")
        edge_changed.send(sender=None, actor=ACTOR, reason="domain removed")
    assert queued_syncs() == 2


def test_sync_edges_command_with_no_edge_to_serve(db, capsys):
    from django.core.management import call_command

    call_command("sync_edges")
    assert capsys.readouterr().out.strip() == "Edges synced: none."


def test_nothing_is_queued_when_the_change_is_rolled_back(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        edge_changed.send(sender=None, actor=ACTOR, reason="x")
    assert len(callbacks) == 1 and queued_syncs() == 0
    # Nothing was marked pending either: the next committed change still queues a sync.
    with django_capture_on_commit_callbacks(execute=True):
        edge_changed.send(sender=None, actor=ACTOR, reason="y")
    assert queued_syncs() == 1


@pytest.mark.parametrize(
    ("edge", "problem"),
    [
        ({"http": "0.0.0.0:80"}, "needs both 'http' and 'https'"),
        ({"http": "0.0.0.0:80", "https": "0.0.0.0:443;evil"}, "stack.edge.https must be host:port"),
        ({"http": "80", "https": "0.0.0.0:443"}, "stack.edge.http must be host:port"),
        ({"http": ":80", "https": ":443", "shop_front": "cache"}, "'cache' must name an app service"),
        ({"http": ":80", "https": ":443", "shop_front": "nope"}, "'nope' must name an app service"),
    ],
)
def test_public_listeners_and_shop_front_are_checked(edge, problem):
    stack = make_stack(app_port=18000)
    stack["edge"].update(edge)
    assert any(problem in p for p in stack_problems(stack)), stack_problems(stack)


def test_the_shop_front_defaults_to_the_service_at_slash_and_is_required_without_one():
    stack = make_stack(app_port=18000)
    stack["edge"].update(http="0.0.0.0:80", https="0.0.0.0:443")
    assert stack_problems(stack) == []
    stack["edge"]["routes"] = {"/api/": "web"}
    assert any("shop_front must name the app service" in p for p in stack_problems(stack))


def test_the_target_edge_config_serves_shops_over_tls_and_passes_nginx_t(tmp_path):
    stack = default_stack()
    stack["edge"].update(http="0.0.0.0:80", https="0.0.0.0:443", shop_front="frontend")
    certs = tmp_path / "certs"
    _, cert, key = make_tls_files(certs, ["*.platform.test"])
    (certs / "_platform.pem").write_bytes(cert.read_bytes())
    (certs / "_platform.key").write_bytes(key.read_bytes())
    tls = EdgeTls(http_listen="127.0.0.1:18080", https_listen="127.0.0.1:18443", certs=str(certs),
                  domains=["a.example", "b.example"], platform=True, acme_upstream="10.0.0.5:80")
    text = render_proxy_config(stack=stack, listen="127.0.0.1:18099", label="blue", tls=tls,
                               upstreams={"backend": ["127.0.0.1:1"], "frontend": ["127.0.0.1:2"]})
    assert "server_name a.example b.example;" in text
    assert f"ssl_certificate {certs}/$ssl_server_name.pem;" in text
    assert "ssl_reject_handshake on;" in text
    assert "upstream app__acme { server 10.0.0.5:80" in text
    # HSTS on the platform's subdomains only; every shop server refuses the control plane's paths.
    assert text.count("Strict-Transport-Security") == 1
    assert text.count(SHOP_REFUSED) == 2
    assert "if ($scheme = http) { return 301 https://$host:18443$request_uri; }" in text
    (tmp_path / "nginx.conf").write_text(text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    checked = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True, text=True,
    )
    assert checked.returncode == 0, checked.stderr
    # A host name that is not one nginx word never reaches the file.
    from deployments.errors import DeploymentValidationError

    bad = EdgeTls(**{**tls.__dict__, "domains": ["a.example; include /etc/passwd"]})
    with pytest.raises(DeploymentValidationError, match="cannot be written into nginx.conf"):
        render_proxy_config(stack=stack, listen="127.0.0.1:18099", label="blue", tls=bad,
                            upstreams={"frontend": ["127.0.0.1:2"]})
