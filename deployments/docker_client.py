"""The one place a Docker Engine client is built (lazily, per address, cached per process)."""

import threading

import docker
import paramiko
from django.conf import settings
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import DockerException
from docker.tls import TLSConfig
from requests.exceptions import RequestException

from deployments.errors import TargetUnreachable

_clients: dict[tuple, docker.DockerClient] = {}
# What a client raises when the engine, or the ssh:// way to it, does not answer.
UNREACHABLE = (DockerException, RequestException, OSError, paramiko.SSHException)
_lock = threading.Lock()


def _build(base_url: str, tls, version: str | None) -> docker.DockerClient:
    client = docker.DockerClient(
        base_url=base_url,
        tls=tls,
        timeout=settings.DEPLOY_DOCKER_TIMEOUT,
        # ssh:// goes through paramiko with the worker's ~/.ssh/config (identity, proxy command) and
        # known_hosts; unknown hosts are refused. Not the system ssh client: exec_run over it breaks
        # (docker/docker-py#3218), and the release proxy switch uses exec.
        version=version,  # None: ask the engine
    )
    if tls:
        # Otherwise requests lets REQUESTS_CA_BUNDLE replace the engine's CA and verification fails.
        client.api.trust_env = False
    return client


def _api_version(base_url: str, tls) -> str:
    # With TLS the version must be asked with trust_env off, so not by the constructor.
    probe = _build(base_url, tls, version=MINIMUM_DOCKER_API_VERSION)
    try:
        return probe.api.version(api_version=False)["ApiVersion"]
    finally:
        probe.close()


def docker_client(
    *, base_url: str, tls_ca: str = "", tls_cert: str = "", tls_key: str = ""
) -> docker.DockerClient:
    """A client that has answered a ping; TargetUnreachable (fast) when the engine does not answer."""
    key = (base_url, tls_ca, tls_cert, tls_key)
    with _lock:
        client = _clients.get(key)
    if client is None:
        try:
            tls = False
            if base_url.startswith("tcp://") and (tls_cert or tls_ca):
                tls = TLSConfig(
                    client_cert=(tls_cert, tls_key) if tls_cert else None,
                    ca_cert=tls_ca or None,
                    verify=bool(tls_ca),
                )
            client = _build(base_url, tls, version=None if not tls else _api_version(base_url, tls))
        except UNREACHABLE as exc:
            raise TargetUnreachable(
                f"Cannot reach the Docker Engine at {base_url}: {exc}. Check the address, that dockerd "
                "runs there, and (tcp://) the TLS files or (ssh://) that the worker can ssh in."
            ) from None
        with _lock:
            _clients[key] = client
    try:
        client.ping()
    except UNREACHABLE as exc:
        with _lock:
            _clients.pop(key, None)
        raise TargetUnreachable(f"The Docker Engine at {base_url} stopped answering: {exc}.") from None
    return client
