"""Docker plumbing for the compose engine: one Docker Engine, one project on it.

Everything the project owns carries the ``platform.project=<project>`` label and is found by it.
Containers join the project's networks (compose's ``<project>_default`` unless the stack names its
own) with an alias, as compose does; with ``network_mode: host`` they use the host's network instead.
Nothing here knows about releases, colours or the release proxy.
"""

import io
import tarfile
import time
from collections.abc import Callable
from typing import Any

from docker import DockerClient
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from deployments.docker_client import docker_client
from deployments.errors import StepFailed
from deployments.models import Target

LABEL = "platform.project"


def tar_one_file(name: str, text: str) -> bytes:
    """A tar archive holding one file, as ``put_archive`` takes it."""
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class DockerHost:
    def __init__(
        self, target: Target, *, project: str, networks: list[str], log: Callable[[str], None]
    ) -> None:
        self.target = target
        self.project = project
        # Empty with network_mode: host.
        self.networks = networks
        self.host_mode = not networks
        self.log = log
        self._client: DockerClient | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            t = self.target
            self._client = docker_client(
                base_url=t.docker_host,
                tls_ca=t.docker_tls_ca,
                tls_cert=t.docker_tls_cert,
                tls_key=t.docker_tls_key,
            )
        return self._client

    def describe(self) -> str:
        info = self.client.version()
        return (
            f"Docker Engine {info.get('Version')} (API {info.get('ApiVersion')}) at {self.target.docker_host}"
        )

    # -- containers -------------------------------------------------------------------------------

    def containers(self, **labels: str) -> list[Container]:
        """The project's containers (running or not) with these ``platform.<key>`` labels."""
        filters = {"label": [f"{LABEL}={self.project}", *(f"platform.{k}={v}" for k, v in labels.items())]}
        return self.client.containers.list(all=True, filters=filters)

    def container(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def get(self, name: str) -> Container:
        """The container, or docker's NotFound."""
        return self.client.containers.get(name)

    def remove(self, name: str) -> bool:
        """Remove (forced) the container if it exists; whether there was one."""
        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            return False
        return True

    def stop(self, name: str, timeout: int = 10) -> bool:
        """Stop the container if it exists; whether there was one."""
        try:
            self.client.containers.get(name).stop(timeout=timeout)
        except NotFound:
            return False
        return True

    def create(
        self, *, name: str, image: str, labels: dict[str, str], alias: str, **kwargs: Any
    ) -> Container:
        """Create (not start) a container of the project, on all of its networks under ``alias``."""
        kwargs.update(image=image, name=name, detach=True, labels={LABEL: self.project, **labels})
        if self.host_mode:
            kwargs["network_mode"] = "host"
        else:
            first = self.networks[0]
            kwargs["network"] = first
            # Reachable by service name inside the project network, like compose does.
            kwargs["networking_config"] = {first: self.client.api.create_endpoint_config(aliases=[alias])}
        container = self.client.containers.create(**kwargs)
        for net in self.networks[1:]:
            self.client.networks.get(net).connect(container, aliases=[alias])
        return container

    def run(self, *, name: str, image: str, labels: dict[str, str], alias: str, **kwargs: Any) -> None:
        """Replace any container of that name with a new one, started; StepFailed if docker refuses."""
        self.remove(name)
        try:
            container = self.create(name=name, image=image, labels=labels, alias=alias, **kwargs)
            container.start()
        except APIError as exc:
            raise StepFailed(f"Could not start {name}: {exc.explanation or exc}") from None

    @staticmethod
    def exec(container: Container, cmd: list[str]) -> tuple[int, str]:
        result = container.exec_run(cmd)
        return result.exit_code, result.output.decode(errors="replace")

    @staticmethod
    def put_file(container: Container, folder: str, name: str, text: str) -> None:
        container.put_archive(folder, tar_one_file(name, text))

    @staticmethod
    def logs_tail(container: Container) -> str:
        try:
            return container.logs(tail=15).decode(errors="replace").strip()
        except DockerException:
            return ""

    # -- images, volumes, networks ----------------------------------------------------------------

    def ensure_image(self, ref: str) -> None:
        try:
            self.client.images.get(ref)
        except ImageNotFound:
            self.log(f"pulling {ref}")
            try:
                self.client.images.pull(ref)
            except DockerException as exc:
                raise StepFailed(f"Image {ref} is not on the host and could not be pulled: {exc}") from None

    def volume_names(self) -> set[str]:
        """Names of the volumes the project owns."""
        return {v.name for v in self.client.volumes.list(filters={"label": f"{LABEL}={self.project}"})}

    def ensure_volume(self, name: str) -> bool:
        """Create the volume unless it exists; whether it was created."""
        try:
            self.client.volumes.get(name)
        except NotFound:
            self.client.volumes.create(name=name, labels={LABEL: self.project})
            return True
        return False

    def ensure_network(self, name: str) -> bool:
        """Create the bridge network unless it exists; whether it was created."""
        try:
            self.client.networks.get(name)
        except NotFound:
            self.client.networks.create(name, driver="bridge", labels={LABEL: self.project})
            return True
        return False
