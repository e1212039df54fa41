"""Release-proxy route paths go into nginx `location` blocks: only a safe grammar is accepted, and it
is checked before anything is rendered."""

import subprocess

import pytest

from core.audit import Actor
from deployments.errors import DeploymentValidationError
from deployments.models import Deployment, Environment, Target
from deployments.secrets import environment_secret_set
from deployments.services import deployment_create, release_create, target_problems
from deployments.stack import default_stack, render_proxy_config, stack_problems

ACTOR = Actor.command("pytest")
UNSAFE = [
    '/x; return 200 "pwned";',
    "/x\n}\nserver { listen 9999; location / { return 200 pwned; } }\n#",
    "/x {",
    "/a/../b",
    "/a b",
    "/x#comment",
    "/x'",
    "/$host",
    "api/",
    "",
]


@pytest.mark.parametrize("path", UNSAFE)
def test_unsafe_route_paths_are_refused_with_what_to_write(path):
    stack = default_stack()
    stack["edge"]["routes"][path] = "backend"
    assert any(
        "must start with '/' and use only letters, digits and '. _ ~ / -'" in p for p in stack_problems(stack)
    )
    # Rendering checks again, so a stack that skipped validation still never reaches nginx.
    with pytest.raises(DeploymentValidationError, match="stack.edge.routes: path"):
        render_proxy_config(stack=stack, listen="8080", upstreams={"backend": ["127.0.0.1:1"]}, label="blue")


def test_injection_is_refused_at_deploy_before_the_target_is_reached(db):
    env = Environment.objects.create(name="production")
    for name in ("APP_DATABASE_URL", "DB_PASSWORD"):
        environment_secret_set(environment=env, name=name, value="v", actor=ACTOR)
    stack = default_stack()
    stack["edge"]["routes"] = {'/x; return 200 "pwned";': "backend", "/": "frontend"}
    Target.objects.create(
        environment=env,
        name="vps",
        docker_host="unix:///nonexistent/docker.sock",
        project="shop",
        stack=stack,
    )
    release_create(version="1.0.0", images={"backend": "a/b:1", "frontend": "a/c:1"}, actor=ACTOR)
    with pytest.raises(DeploymentValidationError, match="stack.edge.routes: path"):
        deployment_create(environment="production", version="1.0.0", actor=ACTOR)
    assert not Deployment.objects.exists()


def test_safe_routes_render_a_config_nginx_accepts(tmp_path):
    stack = default_stack()
    stack["edge"]["routes"] = {"/api/v1.2/": "backend", "/~static/_next-x/": "frontend", "/": "frontend"}
    text = render_proxy_config(
        stack=stack,
        listen="127.0.0.1:18099",
        upstreams={"backend": ["127.0.0.1:18098"], "frontend": ["127.0.0.1:18097"]},
        label="blue",
    )
    assert "location /api/v1.2/ {" in text
    (tmp_path / "nginx.conf").write_text(text)
    checked = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


def test_trailing_newlines_and_unsafe_listen_addresses_never_reach_nginx(db):
    stack = default_stack()
    stack["edge"]["routes"] = {"/api/\n": "backend", "/": "frontend"}
    assert any("stack.edge.routes: path" in p for p in stack_problems(stack))
    stack["edge"]["routes"] = {"/": "frontend"}
    for listen, upstream in (("80; include /etc/passwd", "127.0.0.1:1"), ("80", "web:1;\n")):
        with pytest.raises(DeploymentValidationError, match="cannot be written into the release proxy"):
            render_proxy_config(stack=stack, listen=listen, upstreams={"frontend": [upstream]}, label="blue")
    env = Environment.objects.create(name="production")
    target = Target.objects.create(
        environment=env, name="vps", docker_host="unix:///x.sock", edge_listen="0.0.0.0;evil:80"
    )
    assert "edge_listen '0.0.0.0;evil:80' must be host:port, e.g. 0.0.0.0:80." in target_problems(target)


def test_the_release_proxy_forwards_the_client_and_hides_machine_endpoints(tmp_path):
    """Through a real nginx in front of a server that echoes what it was sent."""
    import http.server
    import threading
    import time
    import urllib.error
    import urllib.request

    from platform_site.devservices import free_port

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            sent = self.headers
            body = f"{self.path} xff={sent.get('X-Forwarded-For')} real={sent.get('X-Real-IP')}"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port = free_port()
    stack = default_stack()
    stack["edge"]["routes"] = {"/": "frontend"}
    text = render_proxy_config(stack=stack, listen=f"127.0.0.1:{port}",
                               upstreams={"frontend": [f"127.0.0.1:{app.server_address[1]}"]}, label="blue")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("worker_processes 1;", "worker_processes 1;\ndaemon off;"))
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"], stderr=subprocess.PIPE
    )

    def get(path: str, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    try:
        for _ in range(100):
            try:
                get("/__edge/health")
                break
            except OSError:
                time.sleep(0.05)
        status, body = get("/shop", **{"X-Forwarded-For": "198.51.100.7"})
        assert (status, body) == (200, "/shop xff=198.51.100.7, 127.0.0.1 real=127.0.0.1")
        hidden = ("/metrics", "/readyz", "/readyz/", "//metrics", "/%6detrics", "/internal/tls/ask?domain=x")
        for path in hidden:
            assert get(path)[0] == 404, path
    finally:
        nginx.terminate()
        nginx.wait(5)
        app.shutdown()
