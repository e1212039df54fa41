"""The nginx edge: render its config from the active domains, validate, swap atomically, reload.

EDGE_DIR holds nginx.conf (live), nginx.conf.last-good (the one before it), certs/ (chain and
key per domain, keys 0600) and nginx's own logs and temp folders. A candidate config that fails
`nginx -t` never replaces the live one: the failure is logged and audited, the edge keeps
serving the last good config.
"""

import grp
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from core.audit import Action, Actor, audit_record
from core.crypto import secret_decrypt
from core.db import connection
from tenants.errors import TenantError
from tenants.models import Certificate, Domain

logger = logging.getLogger(__name__)


class EdgeConfigInvalid(TenantError):
    pass


class EdgeReloadFailed(TenantError):
    pass


@dataclass(frozen=True)
class RenderResult:
    domains: int
    changed: bool
    reloaded: bool
    path: Path


def edge_dir() -> Path:
    return Path(settings.EDGE_DIR)


def _cert_paths(name: str) -> tuple[Path, Path]:
    certs = edge_dir() / "certs"
    return certs / f"{name}.pem", certs / f"{name}.key"


def _write_atomic(path: Path, data: bytes, mode: int, group: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if group:
            try:
                os.fchown(fd, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, PermissionError) as exc:
                raise EdgeConfigInvalid(
                    f"Cannot give {path.name} to group {group!r} ({exc}); set EDGE_KEY_GROUP to the "
                    "group nginx workers run as, and run the writer as root or a member of it."
                ) from None
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def certificate_files_write(name: str, chain_pem: bytes, key_pem: bytes) -> None:
    chain_path, key_path = _cert_paths(name)
    # Key before chain: nginx must never see a new chain beside an old key.
    if settings.EDGE_TLS_MODE == "shared":
        # Workers load certificates at the handshake: they need to read the key (group only).
        _write_atomic(key_path, key_pem, 0o640, group=settings.EDGE_KEY_GROUP)
    else:
        _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(chain_path, chain_pem, 0o644)


def _listen(port: int, *extra: str) -> str:
    address = f"{settings.EDGE_LISTEN_ADDRESS}:{port}" if settings.EDGE_LISTEN_ADDRESS else str(port)
    return " ".join(["listen", address, *extra]) + ";"


def _https_redirect() -> str:
    port = "" if settings.EDGE_HTTPS_PORT == 443 else f":{settings.EDGE_HTTPS_PORT}"
    return f"return 301 https://$host{port}$request_uri;"


# Control-plane paths, refused by the edge itself on shops' hosts (subdomains and custom domains).
# nginx matches locations on the decoded, slash-merged path, so /%6detrics or //admin/ are caught too.
SHOP_REFUSED = r"^/(metrics|readyz)/*$|^/(admin|django-rq|internal)(/|$)"
# On the admin host the staff pages stay; machine endpoints are scraped from the app directly.
ADMIN_REFUSED = r"^/(metrics|readyz)/*$|^/internal(/|$)"


def _refuse(pattern: str) -> str:
    return f"location ~ {pattern} {{ return 404; }}"


def _shop_names(admin: str, base: str) -> str:
    # ".base" also means base itself, which clashes with an admin block named base.
    return f"*.{base}" if admin == base else f".{base}"


def _hash_size(count: int) -> int:
    size = 512
    while size < count * 2:
        size *= 2
    return size


def render_config(names: list[str]) -> str:
    """The whole nginx.conf for these active custom domains (their cert files must exist)."""
    root = edge_dir()
    http, https = settings.EDGE_HTTP_PORT, settings.EDGE_HTTPS_PORT
    base, admin = settings.PLATFORM_BASE_DOMAIN, settings.PLATFORM_ADMIN_HOST
    platform_tls = bool(settings.EDGE_PLATFORM_CERT and settings.EDGE_PLATFORM_KEY)
    out = [
        "# Rendered by tenants/domains/edge.py (render_edge_config); edits here are overwritten.",
        "worker_processes 1;",
        f"pid {root}/nginx.pid;",
        f"error_log {root}/logs/error.log warn;",
        "events { worker_connections 1024; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {root}/tmp/body;",
        f"    proxy_temp_path {root}/tmp/proxy;",
        f"    fastcgi_temp_path {root}/tmp/fastcgi;",
        f"    uwsgi_temp_path {root}/tmp/uwsgi;",
        f"    scgi_temp_path {root}/tmp/scgi;",
        f"    server_names_hash_max_size {_hash_size(len(names) + 4)};",
        "    server_names_hash_bucket_size 128;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:edge_tls:10m;",
        "    proxy_http_version 1.1;",
        # The client's Host as sent (with its port), so Django's CSRF origin check matches.
        "    proxy_set_header Host $http_host;",
        # Appended, never replaced: the app reads it right to left from TRUSTED_PROXIES (core.clientip).
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header Connection \"\";",
        f"    upstream platform_app {{ server {settings.EDGE_UPSTREAM}; keepalive 16; }}",
        "",
        "    # Any other host: only the ACME answers (the app checks host and token).",
        "    server {",
        f"        {_listen(http, 'default_server')}",
        "        server_name _;",
        "        location ^~ /.well-known/acme-challenge/ { proxy_pass http://platform_app; }",
        "        location / { return 404; }",
        "    }",
    ]
    platform_listen = [f"        {_listen(http)}"]
    if platform_tls:
        platform_listen += [
            f"        {_listen(https, 'ssl')}",
            f"        ssl_certificate {settings.EDGE_PLATFORM_CERT};",
            f"        ssl_certificate_key {settings.EDGE_PLATFORM_KEY};",
        ]
    out += [
        "",
        "    # The control plane's host: the admin and the RQ dashboard, never machine endpoints.",
        "    server {",
        *platform_listen,
        f"        server_name {admin};",
        f"        {_refuse(ADMIN_REFUSED)}",
        "        location / { proxy_pass http://platform_app; }",
        "    }",
        "",
        "    # Shops' platform subdomains: only what shops have.",
        "    server {",
        *platform_listen,
        f"        server_name {_shop_names(admin, base)};",
        f"        {_refuse(SHOP_REFUSED)}",
        "        location / { proxy_pass http://platform_app; }",
        "    }",
    ]
    if settings.EDGE_TLS_MODE == "shared":
        out += _shared_block(names)
        names = []
    for name in names:
        chain, key = _cert_paths(name)
        out += [
            "",
            "    server {",
            f"        {_listen(http)}",
            f"        {_listen(https, 'ssl')}",
            f"        server_name {name};",
            f"        ssl_certificate {chain};",
            f"        ssl_certificate_key {key};",
            "        location ^~ /.well-known/acme-challenge/ { proxy_pass http://platform_app; }",
            f"        {_refuse(SHOP_REFUSED)}",
            "        location / {",
            f"            if ($scheme = http) {{ {_https_redirect()} }}",
            "            proxy_pass http://platform_app;",
            "        }",
            "    }",
        ]
    out += ["}", ""]
    return "\n".join(out)


def _shared_block(names: list[str]) -> list[str]:
    """One server for every custom domain; nginx picks the certificate files by SNI at the handshake.

    Config size, `nginx -t`, reload time and memory stay flat as domains grow (per-domain
    blocks load every certificate into the master at each reload). Names that are not listed
    never reach it: the default TLS server rejects their handshake.
    """
    if not names:
        return []
    certs = edge_dir() / "certs"
    lines = ["", "    server {", f"        {_listen(settings.EDGE_HTTPS_PORT, 'ssl', 'default_server')}",
             "        server_name _;", "        ssl_reject_handshake on;", "    }", "",
             "    server {", f"        {_listen(settings.EDGE_HTTP_PORT)}",
             f"        {_listen(settings.EDGE_HTTPS_PORT, 'ssl')}"]
    lines += [f"        server_name {' '.join(names[i:i + 8])};" for i in range(0, len(names), 8)]
    lines += [
        f"        ssl_certificate {certs}/$ssl_server_name.pem;",
        f"        ssl_certificate_key {certs}/$ssl_server_name.key;",
        "        location ^~ /.well-known/acme-challenge/ { proxy_pass http://platform_app; }",
        f"        {_refuse(SHOP_REFUSED)}",
        "        location / {",
        f"            if ($scheme = http) {{ {_https_redirect()} }}",
        "            proxy_pass http://platform_app;",
        "        }",
        "    }",
    ]
    return lines


def _edge_domains() -> list[str]:
    """Active custom domains with certificate files on disk (written from the database if missing)."""
    connection.set_schema_to_public()
    names = []
    rows = (
        Domain.objects.filter(kind=Domain.Kind.CUSTOM, status=Domain.Status.ACTIVE,
                              certificate__status=Certificate.Status.ISSUED)
        .values_list("domain", "certificate__chain_encrypted", "certificate__key_encrypted")
        .order_by("domain")
    )
    shared = settings.EDGE_TLS_MODE == "shared"
    for name, chain_encrypted, key_encrypted in rows:
        chain, key = _cert_paths(name)
        # Rewritten when missing, or (after a switch to shared mode) not yet readable by workers.
        if not (chain.exists() and key.exists()) or (shared and key.stat().st_mode & 0o777 != 0o640):
            certificate_files_write(name, secret_decrypt(chain_encrypted), secret_decrypt(key_encrypted))
        names.append(name)
    return names


def _nginx_test(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [settings.EDGE_NGINX_BIN, "-t", "-q", "-p", str(edge_dir()), "-c", str(config)],
        capture_output=True, text=True, timeout=120,
    )


def _reload_command() -> list[str]:
    if settings.EDGE_RELOAD_COMMAND:
        return shlex.split(settings.EDGE_RELOAD_COMMAND)
    root = edge_dir()
    return [settings.EDGE_NGINX_BIN, "-p", str(root), "-c", str(root / "nginx.conf"), "-s", "reload"]


def edge_prepare() -> None:
    for sub in ("certs", "logs", "tmp"):
        (edge_dir() / sub).mkdir(parents=True, exist_ok=True)


def edge_render(*, actor: Actor, check_only: bool = False, reload: bool = True,
                names: list[str] | None = None) -> RenderResult:
    """Render, validate with `nginx -t`, swap in atomically and reload. Keeps the last good config.

    ``check_only`` validates the would-be config and changes nothing.
    """
    if settings.EDGE_TLS_MODE not in ("per_domain", "shared"):
        raise EdgeConfigInvalid(f"EDGE_TLS_MODE is {settings.EDGE_TLS_MODE!r}; use per_domain or shared.")
    edge_prepare()
    root = edge_dir()
    names = _edge_domains() if names is None else names
    text = render_config(names)
    live = root / "nginx.conf"
    candidate = root / "nginx.conf.candidate"
    _write_atomic(candidate, text.encode(), 0o644)
    tested = _nginx_test(candidate)
    if tested.returncode != 0:
        error = (tested.stderr or tested.stdout).strip()[-2000:]
        if not check_only:
            logger.error("edge config rejected by nginx -t; keeping the last good config: %s", error)
            audit_record(actor=actor, action=Action.EDGE_RENDER_FAILED, target=str(live),
                         details={"error": error, "domains": len(names)})
        candidate.unlink(missing_ok=True)
        raise EdgeConfigInvalid(f"nginx -t rejected the new edge config (the live one is unchanged): {error}")
    if check_only:
        candidate.unlink(missing_ok=True)
        return RenderResult(len(names), live.exists() and live.read_text() != text, False, live)
    changed = not live.exists() or live.read_text() != text
    if not changed:
        candidate.unlink(missing_ok=True)
        return RenderResult(len(names), False, False, live)
    if live.exists():
        shutil.copy2(live, root / "nginx.conf.last-good")
    os.replace(candidate, live)
    reloaded = False
    if reload:
        result = subprocess.run(_reload_command(), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            error = (result.stderr or result.stdout).strip()[-2000:]
            audit_record(
                actor=actor, action=Action.EDGE_RELOAD_FAILED, target=str(live), details={"error": error}
            )
            raise EdgeReloadFailed(f"The edge config is in place but the reload failed: {error}")
        reloaded = True
    removed = _stale_certificates_remove(set(names))
    audit_record(actor=actor, action=Action.EDGE_RENDERED, target=str(live),
                 details={"domains": len(names), "reloaded": reloaded, "stale_cert_files_removed": removed})
    return RenderResult(len(names), True, reloaded, live)


def _stale_certificates_remove(active: set[str]) -> int:
    """Delete key and chain files of domains the live config no longer serves (removed, moved)."""
    removed = 0
    for path in (edge_dir() / "certs").glob("*.*"):
        if path.suffix in (".pem", ".key") and path.stem not in active and not path.name.startswith("."):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
