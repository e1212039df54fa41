"""What a compose target's edge serves over TLS: the certificates, gathered and packed for the engine.

Each push lands in its own generation folder on the edge (``/etc/nginx/certs/<generation>/``) that
the new nginx.conf names. The generation the old workers were started with stays (a connection
one accepted just before the reload may send its ClientHello later), stripped of the domains the
new one no longer serves; older ones are removed. No handshake reads a half-written file.
"""

import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tenants.domains.edge import served_certificates
from tenants.domains.selectors import platform_certificate_material

CERTS = "/etc/nginx/certs"
# Not a host name (no '_' in DNS labels), so it never collides with a custom domain's files.
PLATFORM = "_platform"


@dataclass(frozen=True)
class EdgeMaterial:
    domains: list[tuple[str, bytes, bytes]]  # (name, chain PEM, key PEM), sorted by name
    platform: tuple[bytes, bytes] | None  # the *.<base> wildcard (chain, key)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.domains]


def _platform_certificate() -> tuple[bytes, bytes] | None:
    """The platform wildcard (chain, key), or None when the platform has none yet.

    The one place it is read: the wildcard the control plane issued by DNS-01, else the files
    EDGE_PLATFORM_CERT / EDGE_PLATFORM_KEY (a certificate bought elsewhere, or before the first issue).
    """
    issued = platform_certificate_material()
    if issued is not None:
        return issued.chain_pem, issued.key_pem
    if not (settings.EDGE_PLATFORM_CERT and settings.EDGE_PLATFORM_KEY):
        return None
    try:
        return Path(settings.EDGE_PLATFORM_CERT).read_bytes(), Path(settings.EDGE_PLATFORM_KEY).read_bytes()
    except OSError as exc:
        raise FileNotFoundError(
            f"The platform certificate files cannot be read ({exc}); fix EDGE_PLATFORM_CERT and "
            "EDGE_PLATFORM_KEY or unset both."
        ) from None


def edge_material() -> EdgeMaterial:
    return EdgeMaterial(domains=served_certificates(), platform=_platform_certificate())


def generation_new() -> str:
    return f"g{time.time_ns():x}"


def material_tar(
    material: EdgeMaterial | None, generation: str, *, key_gid: int, files: dict[str, str] | None = None
) -> bytes:
    """``certs/<generation>/`` with every chain (0644) and key (0640, group ``key_gid``: the nginx
    workers', which read them at the handshake), plus ``files`` (name: text, 0644), for one
    ``put_archive`` into /etc/nginx."""
    buf = io.BytesIO()
    now = int(time.time())

    def add(path: str, data: bytes | None, mode: int, gid: int = 0) -> None:
        info = tarfile.TarInfo(path)
        info.mtime, info.mode, info.uid, info.gid = now, mode, 0, gid
        if data is None:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w") as tar:
        # Certificates first: the config naming them must never land before them.
        if material is not None:
            add("certs", None, 0o755)
            add(f"certs/{generation}", None, 0o750, key_gid)
            pems = list(material.domains)
            if material.platform:
                pems.append((PLATFORM, *material.platform))
            for name, chain, key in pems:
                add(f"certs/{generation}/{name}.key", key, 0o640, key_gid)
                add(f"certs/{generation}/{name}.pem", chain, 0o644)
        for name, text in (files or {}).items():
            add(name, text.encode(), 0o644)
    return buf.getvalue()
