"""Images for the deployment tests and benchmark, built locally (no registry): a busybox root
filesystem from Debian's busybox-static, and an nginx image from the host's own nginx binary."""

import io
import os
import random
import socket
import subprocess
import tarfile
import time
from pathlib import Path

APP_REPO = "platform-test/app"
EDGE_REF = "platform-test/edge:1.0.0"
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_APPLETS = ("sh", "httpd", "wget", "timeout", "sleep", "mv", "cat", "echo", "ls", "rm", "mkdir")


class _Root:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w")

    def dir(self, path: str) -> None:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.mtime = (
            tarfile.DIRTYPE,
            0o1777 if path == "tmp" else 0o755,
            int(time.time()),
        )
        self.tar.addfile(info)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        self.tar.addfile(info, io.BytesIO(data))

    def link(self, path: str, target: str) -> None:
        info = tarfile.TarInfo(path)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.tar.addfile(info)

    def busybox(self) -> None:
        for d in ("bin", "tmp", "etc", "www"):
            self.dir(d)
        self.file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
        for applet in BUSYBOX_APPLETS:
            self.link(f"bin/{applet}", "busybox")
        self.file("etc/passwd", b"root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        self.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")

    def data(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def _import(client, root: _Root, ref: str) -> str:
    repo, _, tag = ref.rpartition(":")
    client.api.import_image_from_data(root.data(), repository=repo, tag=tag, changes=[PATH_ENV])
    return ref


MIGRATE_SCRIPT = """#!/bin/sh
# This release's own "migrations": say whose they are and where they go (no password), then exit.
echo "applying the migrations of release {version}"
echo "database: ${{DATABASE_URL#*@}}"
echo "app secret seen: $APP_SECRET"
[ -n "$MIGRATE_HANG" ] && sleep 600
echo "done"
exit {exit_code}
"""


def build_app_image(client, version: str, healthy: bool = True, migrate_exit: int = 0) -> str:
    """httpd serving /version; /healthz exists only when ``healthy``; /bin/migrate exits ``migrate_exit``."""
    root = _Root()
    root.busybox()
    root.file("www/version", version.encode())
    if healthy:
        root.file("www/healthz", b"ok")
    root.file("bin/migrate", MIGRATE_SCRIPT.format(version=version, exit_code=migrate_exit).encode(), 0o755)
    return _import(client, root, f"{APP_REPO}:{version}")


def build_edge_image(client) -> str:
    """nginx (the host's Debian binary and its libraries) plus busybox for sh, wget and mv."""
    root = _Root()
    root.busybox()
    for d in (
        "usr",
        "usr/sbin",
        "etc/nginx",
        "var",
        "var/log",
        "var/log/nginx",
        "var/lib",
        "var/lib/nginx",
        "run",
    ):
        root.dir(d)
    nginx = "/usr/sbin/nginx"
    root.file("usr/sbin/nginx", Path(nginx).read_bytes(), 0o755)
    libs = subprocess.run(["ldd", nginx], capture_output=True, text=True, check=True).stdout
    seen = set()
    for line in libs.splitlines():
        path = next((p for p in line.split() if p.startswith("/")), None)
        if not path or path in seen:
            continue
        seen.add(path)
        parts = Path(path).parent.parts[1:]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in seen:
                seen.add(d)
                root.dir(d)
        root.file(path.lstrip("/"), Path(path).resolve().read_bytes(), 0o755)
    root.file("etc/nginx/nginx.conf", b"events {}\nhttp { server { listen 127.0.0.1:1; } }\n")
    return _import(client, root, EDGE_REF)


def make_stack(*, app_port: int, secret_name: str = "TEST_APP_SECRET", network_mode: str = "host") -> dict:
    # On its own network the app listens on every address, so the edge can reach it by name.
    listen = "127.0.0.1:" if network_mode == "host" else ""
    return {
        "network_mode": network_mode,
        "services": {
            "web": {
                "role": "app",
                "port": app_port,
                "health_path": "/healthz",
                "replicas": 1,
                "init": True,
                "command": ["/bin/sh", "-c", f"exec httpd -f -p {listen}$${{PORT}} -h /www"],
                "secrets": {"APP_SECRET": secret_name},
                "healthcheck": {
                    "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:$${PORT}/healthz"],
                    "interval": "1s",
                    "timeout": "1s",
                    "retries": 2,
                },
            },
            "cache": {
                "role": "stateful",
                "image": f"{APP_REPO}:1.0.0",
                "init": True,
                "command": ["/bin/sh", "-c", "exec sleep 100000"],
                "volumes": ["cache_data:/data"],
            },
        },
        "edge": {"routes": {"/": "web"}},
        "volumes": ["cache_data"],
        # The release's own migrations, from its image (a script in these busybox images).
        "migrate": {"service": "web", "command": ["/bin/migrate"]},
    }


ECHO_CGI = b"""#!/bin/sh
echo "Content-Type: text/plain"
echo ""
echo "$PLATFORM_COLOR $HTTP_HOST $HTTP_X_FORWARDED_PROTO"
"""


def echo_app_image(client, version: str) -> str:
    """httpd whose / answers "<colour> <Host> <X-Forwarded-Proto>" (a CGI); /healthz for the checks."""
    ref = f"platform-test/echo:{version}"
    try:
        client.images.get(ref)
        return ref
    except Exception:  # noqa: BLE001 - docker's ImageNotFound: build it below
        pass
    root = _Root()
    root.busybox()
    root.dir("www/cgi-bin")
    root.file("www/cgi-bin/index.cgi", ECHO_CGI, 0o755)
    root.file("www/healthz", b"ok")
    root.file("www/version", version.encode())
    root.file("bin/migrate", MIGRATE_SCRIPT.format(version=version, exit_code=0).encode(), 0o755)
    return _import(client, root, ref)


def free_port_pair() -> int:
    """A port p with p+1..p+3 free too (blue and green of two replicas in host networking).

    Taken below the kernel's ephemeral range and from this xdist worker's own slice: a port that
    was merely free when checked could otherwise be handed to another process's connection or
    another worker's `free_port()` before the container binds it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) if worker.isdigit() else 0) % 8 * 1500
    for _ in range(50):
        port = base + random.randrange(0, 1496, 4)
        try:
            for extra in (0, 1, 2, 3):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + extra))
            return port
        except OSError:
            continue
    raise RuntimeError("no free run of ports")
