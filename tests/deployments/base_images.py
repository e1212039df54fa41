"""Base images for the control plane's image test, made here from Debian's own packages.

No image registry is reachable, so ``python:3.11-slim-bookworm`` (the Dockerfile's public default)
cannot be pulled. Instead ``mmdebstrap`` makes a Debian bookworm root filesystem with Python 3.11,
its venv module and the PostgreSQL 15 client, and ``docker import`` turns it into the base image;
a second one carries the servers of the production stack (PostgreSQL 15, PgBouncer, Redis, nginx).

The root filesystems, and a wheelhouse of requirements.txt built with the host's pip, are cached
under ``PLATFORM_TEST_IMAGE_CACHE`` (default ``/var/cache/platform-test-images``), keyed by their
inputs, so only the first run on a machine pays for them; the image itself is built every run.
"""

import fcntl
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PLATFORM_TEST_IMAGE_CACHE", "/var/cache/platform-test-images"))
MIRROR = os.environ.get("PLATFORM_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
RECIPE = 1  # bump to rebuild every cached root filesystem
PYTHON_PACKAGES = ("python3", "python3-venv", "libpq5", "postgresql-client-15", "ca-certificates")
SERVER_PACKAGES = (
    "postgresql-15",
    "postgresql-client-15",
    "pgbouncer",
    "redis-server",
    "nginx",
    "curl",
    "ca-certificates",
)
# Requirements only Debian's Python 3.11.2 pulls in, which the host's newer 3.11 resolves away
# (markers on python_full_version): redis needs async-timeout below 3.11.3.
BASE_PYTHON_EXTRAS = ("async-timeout>=4.0.3",)
IMAGE_ENV = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
]


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder per cache entry across xdist workers and concurrent runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def debian_rootfs(name: str, packages: tuple[str, ...]) -> Path:
    """A cached tarball of a minimal Debian root filesystem with ``packages`` installed."""
    out = CACHE / f"{name}-{_key(SUITE, MIRROR, sorted(packages), RECIPE)}.tar"
    with _locked(out.name):
        if out.exists():
            return out
        if not shutil.which("mmdebstrap"):
            raise RuntimeError(
                "mmdebstrap not found: install the Debian package 'mmdebstrap' (scripts/setup)."
            )
        part = out.with_suffix(".part")
        cmd = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--format=tar",
            f"--include={','.join(packages)}",
            # Smaller, and nothing a container reads.
            *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*.bin",
            SUITE,
            str(part),
            MIRROR,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode:
            part.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed ({done.returncode}): {done.stderr[-2000:]}")
        part.rename(out)
    return out


def import_rootfs(docker_url: str, tarball: Path, ref: str) -> str:
    """``docker import`` of a root filesystem tarball as ``ref`` (the CLI streams large files well)."""
    done = subprocess.run(
        [
            "docker",
            "-H",
            docker_url,
            "import",
            *(arg for c in IMAGE_ENV for arg in ("-c", c)),
            str(tarball),
            ref,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"docker import of {tarball} failed: {done.stderr[-2000:]}")
    return ref


def wheelhouse() -> Path:
    """Wheels of every requirement, built by the host's pip (its own index settings), cached."""
    requirements = (REPO / "requirements.txt").read_text()
    out = CACHE / f"wheels-{_key(requirements, BASE_PYTHON_EXTRAS, sys.version_info[:2], RECIPE)}"
    with _locked(out.name):
        if out.exists():
            return out
        part = out.with_name(out.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        for args in (["-r", str(REPO / "requirements.txt")], list(BASE_PYTHON_EXTRAS)):
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(part), *args],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if done.returncode:
                raise RuntimeError(f"pip wheel failed ({done.returncode}): {done.stderr[-2000:]}")
        part.rename(out)
    return out


def build_context_key(*extra: object) -> str:
    """A digest of what ``docker build`` of this checkout sends (.dockerignore applied: names, modes
    and contents), plus ``extra`` (the base, the build arguments that shape the image)."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name in sorted(exclude_paths(str(REPO), patterns)):
        path = REPO / name
        if path.is_file() and not path.is_symlink():
            digest.update(f"{name}\0{path.stat().st_mode & 0o111}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cached_image(docker_url: str, ref: str, key: str, build: Callable[[], None]) -> bool:
    """``ref`` loaded from the cache when an image with this ``key`` was built before (True), else
    built and saved there (False). The two newest are kept."""
    tar = CACHE / f"control-plane-{key}.tar"
    with _locked(tar.name):
        if tar.exists():
            _docker(docker_url, "load", "-q", "-i", str(tar))
            return True
        build()
        part = tar.with_suffix(".part")
        _docker(docker_url, "save", "-o", str(part), ref)
        part.rename(tar)
    for old in sorted(CACHE.glob("control-plane-*.tar"), key=lambda p: p.stat().st_mtime)[:-2]:
        old.unlink(missing_ok=True)
    return False


def _docker(docker_url: str, *args: str) -> None:
    done = subprocess.run(["docker", "-H", docker_url, *args], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"docker {args[0]} failed: {done.stderr[-2000:]}")


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """An HTTP listing of ``folder`` on loopback (pip's --find-links), for the length of a build."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
