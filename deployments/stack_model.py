"""The stack as typed data, parsed from the JSON (or YAML) stored on a target, and its rules.

``Stack.parse`` never refuses: the fields carry the values as written, annotated with the shape they
must have, and ``Stack.problems()`` says, rule by rule, where they do not, each message naming what
to fix. A stack with no problems is one the engines and renderers can use as annotated.
"""

import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("app", "stateful")
NETWORK_MODES = ("bridge", "host")
HEALTHCHECK_DURATIONS = ("interval", "timeout", "start_period")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Route paths are written into nginx `location` blocks: nothing that could end the directive or
# open a block (whitespace, ';', braces, quotes, '#', '$'), and no '..'.
_LISTEN = re.compile(r"^[A-Za-z0-9.\[\]:-]{0,200}:\d{1,5}$")
_ROUTE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}$")


def route_path_problem(path: Any) -> str | None:
    """Why ``path`` may not be a release-proxy route, or None when it is safe to write into nginx."""
    if isinstance(path, str) and _ROUTE_PATH.fullmatch(path) and ".." not in path:
        return None
    return (
        f"stack.edge.routes: path {str(path)[:80]!r} must start with '/' and use only letters, digits and "
        "'. _ ~ / -' (no spaces, quotes, ';', braces, '#' or '..'), up to 200 characters, e.g. /api/."
    )


def duration_seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration like 10s, 500ms or 1m")
    number, unit = float(match[1]), match[2]
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@dataclass(frozen=True)
class Mount:
    """A ``volumes`` entry: ``volume:/path`` (a named volume) or ``/host/path:/path`` (a bind)."""

    spec: str

    @property
    def source(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def is_bind(self) -> bool:
        return self.source.startswith(("/", "."))


@dataclass(frozen=True)
class Service:
    name: str
    # False when the stack gives something other than an object for this service.
    is_object: bool = True
    role: str | None = None
    image: str | None = None
    port: int | None = None
    health_path: str = "/"
    replicas: int = 1
    environment: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    healthcheck: dict[str, Any] | None = None

    @classmethod
    def parse(cls, name: str, raw: Any) -> "Service":
        if not isinstance(raw, dict):
            return cls(name=name, is_object=False)
        return cls(
            name=name,
            role=raw.get("role"),
            image=raw.get("image"),
            port=raw.get("port"),
            health_path=raw.get("health_path", "/"),
            replicas=raw.get("replicas", 1),
            environment=raw.get("environment", {}),
            secrets=raw.get("secrets", {}),
            volumes=raw.get("volumes", []),
            depends_on=raw.get("depends_on", []),
            healthcheck=raw.get("healthcheck"),
        )

    @property
    def where(self) -> str:
        return f"stack.services.{self.name}"

    @property
    def is_app(self) -> bool:
        return self.is_object and self.role == "app"

    def problems(self, *, services: dict[str, "Service"], volumes: set[str]) -> list[str]:
        problems = self._name_problems()
        if not self.is_object:
            return problems + [f"{self.where} must be an object."]
        for rule in (
            self._role_problems,
            self._image_problems,
            self._app_problems,
            self._mapping_problems,
            self._secret_ref_problems,
        ):
            problems += rule()
        problems += self._mount_problems(volumes)
        problems += self._dependency_problems(services)
        problems += self._healthcheck_problems()
        return problems

    # -- rules ------------------------------------------------------------------------------------

    def _name_problems(self) -> list[str]:
        if _NAME.fullmatch(self.name):
            return []
        return [f"{self.where}: service names are lowercase letters, digits, '-' or '_'."]

    def _role_problems(self) -> list[str]:
        if self.role in ROLES:
            return []
        return [f"{self.where}.role must be one of {', '.join(ROLES)} (got {self.role!r})."]

    def _image_problems(self) -> list[str]:
        if self.role == "stateful" and not self.image:
            return [f"{self.where}: a stateful service needs an 'image'."]
        return []

    def _app_problems(self) -> list[str]:
        if self.role != "app":
            return []
        problems = []
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            problems.append(f"{self.where}.port must be the TCP port the service listens on (1-65535).")
        if not str(self.health_path).startswith("/"):
            problems.append(f"{self.where}.health_path must start with '/'.")
        if not isinstance(self.replicas, int) or not 1 <= self.replicas <= 20:
            problems.append(f"{self.where}.replicas must be between 1 and 20.")
        return problems

    def _mapping_problems(self) -> list[str]:
        return [
            f"{self.where}.{key} must map environment variable names to values."
            for key, value in (("environment", self.environment), ("secrets", self.secrets))
            if not isinstance(value, dict) or not all(_ENV_NAME.fullmatch(k) for k in value)
        ]

    def _secret_ref_problems(self) -> list[str]:
        refs = self.secrets.values() if isinstance(self.secrets, dict) else []
        return [
            f"{self.where}.secrets values are secret names (like DB_PASSWORD), not values."
            for ref in refs
            if not isinstance(ref, str) or not _ENV_NAME.fullmatch(ref)
        ]

    def _mount_problems(self, volumes: set[str]) -> list[str]:
        problems = []
        for entry in self.volumes:
            mount = Mount(str(entry))
            if ":" not in mount.spec:
                problems.append(f"{self.where}.volumes entry {entry!r} must be 'volume:/path'.")
            elif not mount.is_bind and mount.source not in volumes:
                problems.append(f"{self.where} mounts volume {mount.source!r}; add it to stack.volumes.")
        return problems

    def _dependency_problems(self, services: dict[str, "Service"]) -> list[str]:
        return [
            f"{self.where}.depends_on names unknown service {dep!r}."
            for dep in self.depends_on
            if dep not in services
        ]

    def _healthcheck_problems(self) -> list[str]:
        check = self.healthcheck
        if check is None:
            return []
        if not isinstance(check, dict) or not isinstance(check.get("test"), list):
            return [f'{self.where}.healthcheck needs a \'test\' list like ["CMD-SHELL", "..."].']
        problems = []
        for key in HEALTHCHECK_DURATIONS:
            if key in check:
                try:
                    duration_seconds(check[key])
                except ValueError as exc:
                    problems.append(f"{self.where}.healthcheck.{key}: {exc}.")
        return problems


@dataclass(frozen=True)
class Route:
    """``stack.edge.routes``: a path prefix the release proxy sends to an app service."""

    path: str
    service: str

    def problems(self, services: dict[str, Service]) -> list[str]:
        problems = []
        if problem := route_path_problem(self.path):
            problems.append(problem)
        target = services.get(self.service)
        if target is None or not target.is_app:
            problems.append(
                f"stack.edge.routes: {self.path!r} points at {self.service!r}, which is not an app service."
            )
        return problems


@dataclass(frozen=True)
class Stack:
    network_mode: str = "bridge"
    services: dict[str, Service] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    # The target's edge as the public edge: its listeners and the app service shops are served by.
    public_http: Any = None
    public_https: Any = None
    shop_front: Any = None
    # {"service": <app service>, "command": [...]}: the release's own migrations, run once per deploy
    # from that service's new image (a one-off container, or an ECS task on AWS).
    migrate: Any = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "Stack":
        services = raw.get("services")
        edge: dict[str, Any] = raw["edge"] if isinstance(raw.get("edge"), dict) else {}
        routes = edge.get("routes") or {}
        return cls(
            network_mode=raw.get("network_mode", "bridge"),
            services=(
                {name: Service.parse(name, svc) for name, svc in services.items()}
                if isinstance(services, dict)
                else {}
            ),
            routes=[Route(path, service) for path, service in routes.items()],
            volumes=raw.get("volumes") or [],
            networks=raw.get("networks") or [],
            public_http=edge.get("http"),
            public_https=edge.get("https"),
            shop_front=edge.get("shop_front"),
            migrate=raw.get("migrate"),
        )

    @classmethod
    def problems_of(cls, raw: Any) -> list[str]:
        """Everything wrong with a stack as stored on a target, each naming what to fix."""
        if not isinstance(raw, dict):
            return ["The stack must be a JSON object with a 'services' key."]
        return cls.parse(raw).problems()

    def problems(self) -> list[str]:
        problems = self._network_mode_problems()
        if not self.services:
            return problems + ["stack.services must name at least one service."]
        volumes = set(self.volumes)
        for service in self.services.values():
            problems += service.problems(services=self.services, volumes=volumes)
        return problems + self._route_problems() + self._public_problems() + self._migrate_problems()

    # -- rules ------------------------------------------------------------------------------------

    def _network_mode_problems(self) -> list[str]:
        if self.network_mode in NETWORK_MODES:
            return []
        return ["stack.network_mode must be 'bridge' or 'host'."]

    def _route_problems(self) -> list[str]:
        if not self.routes:
            return ["stack.edge.routes must send at least one path to an app service."]
        return [problem for route in self.routes for problem in route.problems(self.services)]

    def _public_problems(self) -> list[str]:
        problems = []
        given = [
            (k, v) for k, v in (("http", self.public_http), ("https", self.public_https)) if v is not None
        ]
        for key, value in given:
            if not (isinstance(value, str) and _LISTEN.fullmatch(value)):
                problems.append(
                    f"stack.edge.{key} must be host:port, e.g. 0.0.0.0:{80 if key == 'http' else 443}."
                )
        if len(given) == 1:
            problems.append(
                "stack.edge needs both 'http' and 'https' listeners for the public TLS edge, or neither."
            )
        if self.shop_front is not None:
            target = self.services.get(str(self.shop_front))
            if target is None or not target.is_app:
                problems.append(f"stack.edge.shop_front {self.shop_front!r} must name an app service.")
        elif given and not any(route.path == "/" for route in self.routes):
            problems.append(
                "stack.edge.shop_front must name the app service shops are served by (no route for /)."
            )
        return problems

    def _migrate_problems(self) -> list[str]:
        if self.migrate is None:
            return []
        spec = self.migrate if isinstance(self.migrate, dict) else {}
        service, command = spec.get("service"), spec.get("command")
        target = self.services.get(service) if isinstance(service, str) else None
        problems = []
        if target is None or not target.is_app:
            problems.append(
                f"stack.migrate.service {service!r} must name an app service, whose new image runs the "
                'migrations, e.g. "migrate": {"service": "web", "command": ["python", "manage.py", '
                '"migrate_schemas", "--noinput"]}.'
            )
        if not (isinstance(command, list) and command and all(isinstance(p, str) for p in command)):
            problems.append("stack.migrate.command must be a non-empty list of strings (the command to run).")
        return problems
