"""Stack secrets: each environment's encrypted secret store, and where a stack's secret names resolve.

A stack says ``"secrets": {"DATABASE_URL": "APP_DATABASE_URL"}``: the container gets DATABASE_URL,
with the value the platform holds under the name APP_DATABASE_URL. That name must be

1. in the secret store of the target's environment (``EnvironmentSecret``, encrypted with
   PLATFORM_ENCRYPTION_KEYS, write-only in the admin), or
2. when DEPLOY_SECRET_ENV_PREFIX is set (say ``APP_SECRET_``), a variable with that prefix in the
   deploying worker's environment.

Nothing else: the worker's environment is the control plane's own (SECRET_KEY, DATABASE_URL,
PLATFORM_ENCRYPTION_KEYS, storage keys, AWS credentials), and a stack must never copy it into a
container its author controls. On compose targets the control plane's setting names are refused
whatever the source (the store refuses them as names too). AWS targets pass names the store lacks
through as SSM parameter references (``/<project>/<NAME>``), which the platform never reads; names
in the store are written to those parameters (SecureString) when a deploy starts.
"""

import inspect
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import crypto
from core.audit import Action, Actor, audit_record
from deployments.errors import DeploymentValidationError
from deployments.models import Environment, EnvironmentSecret

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PREFIX = re.compile(r"^[A-Z][A-Z0-9_]*_$")
_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # stack_model's rule; a longer name is simply not stored
MAX_VALUE_BYTES = 64 * 1024
STORE_HINT = "Deployments > Environment secrets in the admin"
# Read by the libraries the control plane uses (credentials, sockets), not through settings.py.
LIBRARY_NAMES = frozenset(
    {
        "DJANGO_SETTINGS_MODULE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICEFILE",
        "PGSSLKEY",
        "SSH_AUTH_SOCK",
        "HOME",
        "PATH",
        "PROMETHEUS_MULTIPROC_DIR",
    }
)
LIBRARY_PREFIXES = ("AWS_", "DOCKER_", "DJANGO_", "SENTRY_", "OTEL_")


@lru_cache(maxsize=1)
def _settings_names() -> frozenset[str]:
    names = {name for name in dir(settings) if name.isupper()}
    # What settings.py reads from the environment (DATABASE_URL feeds DATABASES, and so on).
    module = sys.modules.get(getattr(settings, "SETTINGS_MODULE", "") or "platform_site.settings")
    try:
        source = inspect.getsource(module) if module else ""
    except (OSError, TypeError):
        source = ""
    names |= set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))
    return frozenset(names)


def is_control_plane_name(name: str) -> bool:
    """Whether ``name`` is one of the control plane's own settings or credentials."""
    upper = name.upper()
    return upper in _settings_names() or upper in LIBRARY_NAMES or upper.startswith(LIBRARY_PREFIXES)


def env_prefix() -> str:
    """DEPLOY_SECRET_ENV_PREFIX, checked; "" when reading the worker's environment is off."""
    prefix = (settings.DEPLOY_SECRET_ENV_PREFIX or "").strip()
    if prefix and not _PREFIX.fullmatch(prefix):
        raise DeploymentValidationError(
            f"DEPLOY_SECRET_ENV_PREFIX {prefix!r} must be upper-case letters, digits and '_', ending in "
            "'_' (e.g. APP_SECRET_); fix it in the worker's environment, or empty it to use only the "
            "secret store."
        )
    return prefix


# -- the store ------------------------------------------------------------------------------------


def environment_secret_problems(*, name: str, value: str | None) -> list[str]:
    """What is wrong with a name (and value, when given) for the store; each says what to fix."""
    problems = []
    if not NAME.fullmatch(name or ""):
        problems.append(
            f"Secret name {name!r} must be letters, digits and '_' (not starting with a digit), "
            "up to 128 characters, like DB_PASSWORD."
        )
    elif is_control_plane_name(name):
        problems.append(
            f"{name!r} is one of the control plane's own settings; give the app's secret another name "
            f"(e.g. APP_{name}) and refer to that name in the stack."
        )
    if value is not None:
        if not value:
            problems.append("The secret's value is empty; paste the value to store.")
        elif len(value.encode()) > MAX_VALUE_BYTES:
            problems.append(f"The secret's value is over {MAX_VALUE_BYTES // 1024} KiB; store a smaller one.")
    return problems


def environment_secret_set(
    *, environment: Environment, name: str, value: str, actor: Actor
) -> EnvironmentSecret:
    """Create or replace one secret of ``environment``; audited by name only."""
    name = (name or "").strip()
    problems = environment_secret_problems(name=name, value=value)
    if problems:
        raise DeploymentValidationError(" ".join(problems))
    now = timezone.now()
    with transaction.atomic():
        secret = (
            EnvironmentSecret.objects.select_for_update().filter(environment=environment, name=name).first()
        )
        created = secret is None
        if secret is None:
            secret = EnvironmentSecret(environment=environment, name=name, created_at=now)
        secret.value_encrypted = crypto.secret_encrypt(value.encode())
        secret.updated_at, secret.updated_by = now, f"{actor.type}:{actor.name}"[:200]
        secret.save()
        audit_record(
            actor=actor,
            action=Action.ENVIRONMENT_SECRET_CREATED if created else Action.ENVIRONMENT_SECRET_REPLACED,
            target=f"{environment.name} secret {name}",
            details={"environment": environment.name, "name": name},
        )
    return secret


def environment_secret_delete(*, secret: EnvironmentSecret, actor: Actor) -> None:
    environment, name = secret.environment.name, secret.name
    with transaction.atomic():
        secret.delete()
        audit_record(
            actor=actor,
            action=Action.ENVIRONMENT_SECRET_DELETED,
            target=f"{environment} secret {name}",
            details={"environment": environment, "name": name},
        )


# -- what a stack names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    service: str
    var: str
    name: str

    @property
    def where(self) -> str:
        return f"stack.services.{self.service}.secrets.{self.var}"


def stack_secret_refs(stack: Any) -> list[SecretRef]:
    """Every (service, variable, secret name) of a stack; malformed parts are left to stack_model."""
    services = stack.get("services") if isinstance(stack, dict) else None
    refs = []
    for service, svc in (services or {}).items() if isinstance(services, dict) else ():
        secrets = svc.get("secrets") if isinstance(svc, dict) else None
        for var, name in (secrets or {}).items() if isinstance(secrets, dict) else ():
            if isinstance(name, str) and _REF.fullmatch(name):
                refs.append(SecretRef(str(service), str(var), name))
    return refs


def _store_names(environment: Environment) -> set[str]:
    return set(EnvironmentSecret.objects.filter(environment=environment).values_list("name", flat=True))


def stack_secret_problems(
    *, environment: Environment, stack: Any, kind: str = "compose", include_missing: bool = True
) -> list[str]:
    """Secret names the stack may not use in ``environment``, each naming what to do instead.

    ``include_missing=False`` keeps only what is never allowed (a name the stack must change);
    a name merely not in the store yet is then not reported.
    """
    refs = stack_secret_refs(stack)
    if not refs:
        return []
    try:
        prefix = env_prefix()
    except DeploymentValidationError as exc:
        return [str(exc)]
    stored = _store_names(environment)
    problems = []
    for ref in refs:
        if ref.name in stored and kind != "compose":
            continue
        if kind == "compose" and is_control_plane_name(ref.name):
            problems.append(
                f"{ref.where} names {ref.name!r}, one of the control plane's own settings; containers "
                f"never get those. Store the app's value in the secret store of {environment.name!r} "
                f"({STORE_HINT}) under another name, e.g. APP_{ref.name}, and refer to that."
            )
        elif ref.name in stored or not include_missing or kind != "compose":
            # On AWS a name the store lacks is an SSM parameter reference, never read by the platform.
            continue
        elif prefix and ref.name.startswith(prefix):
            if ref.name not in os.environ:
                problems.append(
                    f"{ref.where}: secret {ref.name!r} is not in the secret store of {environment.name!r} "
                    "nor set in the deploying worker's environment; add it to the store "
                    f"({STORE_HINT}) or set it in the worker's environment, then deploy again."
                )
        else:
            via_env = (
                f", or name it {prefix}{ref.name} and set that in the worker's environment "
                "(DEPLOY_SECRET_ENV_PREFIX)"
                if prefix
                else ""
            )
            problems.append(
                f"{ref.where}: secret {ref.name!r} is not in the secret store of {environment.name!r}; "
                f"add it there ({STORE_HINT}){via_env}, then deploy again."
            )
    return problems


def stack_secrets_resolve(*, environment: Environment, stack: Any, kind: str = "compose") -> dict[str, str]:
    """Secret name -> value for every name the stack uses, or every reason it cannot be deployed.

    Compose targets need all of them; AWS targets get only the store's (the rest are SSM references).
    """
    problems = stack_secret_problems(environment=environment, stack=stack, kind=kind)
    if problems:
        raise DeploymentValidationError(" ".join(problems))
    names = {ref.name for ref in stack_secret_refs(stack)}
    values = {
        secret.name: crypto.secret_decrypt(secret.value_encrypted).decode()
        for secret in EnvironmentSecret.objects.filter(environment=environment, name__in=names)
    }
    if kind == "compose":
        values.update({name: os.environ[name] for name in names - set(values)})
    return values
