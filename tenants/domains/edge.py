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
from tenants.domains import nginx_conf
from tenants.domains.selectors import platform_certificate_material
from tenants.errors import TenantError
from tenants.models import Certificate, Domain
from tenants.signals import edge_changed

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


def _listen(port: int) -> str:
    return f"{settings.EDGE_LISTEN_ADDRESS}:{port}" if settings.EDGE_LISTEN_ADDRESS else str(port)


def render_config(names: list[str]) -> str:
    """The whole nginx.conf for these active custom domains (their cert files must exist).

    Rendered by the one renderer (``nginx_conf``) that also renders compose targets' edges: here
    the shop front and the control plane are both this control plane (EDGE_UPSTREAM).
    """
    root = edge_dir()
    platform_cert = _platform_certificate_files()
    spec = nginx_conf.EdgeSpec(
        prefix=str(root), temp=f"{root}/tmp", error_log=f"{root}/logs/error.log", certs=f"{root}/certs",
        upstreams={"platform": [settings.EDGE_UPSTREAM]}, control_plane="platform", shop_front="platform",
        http_listen=_listen(settings.EDGE_HTTP_PORT), https_listen=_listen(settings.EDGE_HTTPS_PORT),
        https_port=settings.EDGE_HTTPS_PORT, base_domain=settings.PLATFORM_BASE_DOMAIN,
        admin_host=settings.PLATFORM_ADMIN_HOST, platform_cert=platform_cert, custom_domains=names,
        shared_tls=settings.EDGE_TLS_MODE == "shared",
        comment="Rendered by tenants/domains/edge.py (render_edge_config); edits here are overwritten.",
    )
    try:
        return nginx_conf.render(spec)
    except nginx_conf.UnsafeEdgeValue as exc:
        raise EdgeConfigInvalid(f"{exc} Check the EDGE_* settings.") from None


def _platform_certificate_files() -> tuple[str, str] | None:
    """(chain, key) paths of the platform wildcard: the one issued by DNS-01, written beside (not in)
    certs/ so the stale-file sweep leaves it alone; else EDGE_PLATFORM_CERT / EDGE_PLATFORM_KEY."""
    issued = platform_certificate_material()
    if issued is None:
        if settings.EDGE_PLATFORM_CERT and settings.EDGE_PLATFORM_KEY:
            return settings.EDGE_PLATFORM_CERT, settings.EDGE_PLATFORM_KEY
        return None
    chain, key = edge_dir() / "platform" / "wildcard.pem", edge_dir() / "platform" / "wildcard.key"
    if not chain.exists() or chain.read_bytes() != issued.chain_pem:
        group = settings.EDGE_KEY_GROUP if settings.EDGE_TLS_MODE == "shared" else ""
        _write_atomic(key, issued.key_pem, 0o640 if group else 0o600, group=group)
        _write_atomic(chain, issued.chain_pem, 0o644)
    return str(chain), str(key)


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


def edge_changed_notify(*, actor: Actor, reason: str) -> None:
    """What the edges serve changed: the local edge re-renders, and ``tenants.signals.edge_changed``
    tells the apps that run other edges (compose targets') to re-sync."""
    from tenants.domains.jobs import render_edge_job  # it imports this module

    render_edge_job.delay()
    edge_changed.send(sender=None, actor=actor, reason=reason)


def served_certificates() -> list[tuple[str, bytes, bytes]]:
    """(name, chain PEM, key PEM) of every active custom domain with an issued certificate, by name.

    What every edge serves over TLS: this local one and compose targets' (``deployments``).
    """
    connection.set_schema_to_public()
    rows = (
        Domain.objects.filter(kind=Domain.Kind.CUSTOM, status=Domain.Status.ACTIVE,
                              certificate__status=Certificate.Status.ISSUED)
        .values_list("domain", "certificate__chain_encrypted", "certificate__key_encrypted")
        .order_by("domain")
    )
    return [(name, secret_decrypt(chain), secret_decrypt(key)) for name, chain, key in rows]


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
