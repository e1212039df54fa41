"""The selector interface the alert rules read for facts owned by other apps.

Backups, restore drills, deployments and certificates are modelled by other apps. Each fact
source is a dotted path in settings.MONITORING_SOURCES to a function returning the dataclasses
below; a rule whose source is not configured (or not importable yet) reports "not available yet"
and neither opens nor resolves incidents.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class CertificateFact:
    """A certificate the platform manages: `certificates() -> Iterable[CertificateFact]`."""

    tenant_id: str | None
    host: str
    expires_at: datetime
    link: str = ""  # admin path of the certificate or domain


@dataclass(frozen=True)
class BackupFact:
    """A tenant's newest good backup: `backups() -> Iterable[BackupFact]` (one per active tenant)."""

    tenant_id: str
    last_success_at: datetime | None  # None: never backed up
    rpo: timedelta  # how old the newest backup may be (from the plan's backup frequency)
    link: str = ""


@dataclass(frozen=True)
class DrillFact:
    """The latest restore drill per scope: `drills() -> Iterable[DrillFact]`."""

    key: str  # what was drilled (a tenant schema, "whole-database", ...)
    finished_at: datetime
    ok: bool
    detail: str = ""
    tenant_id: str | None = None
    link: str = ""


@dataclass(frozen=True)
class DeploymentFact:
    """A deployment that ended: `deployments(since: datetime) -> Iterable[DeploymentFact]`."""

    id: str
    environment: str
    status: str  # "succeeded", "failed", "rolled_back", ...
    finished_at: datetime
    detail: str = ""
    link: str = ""
    extra: dict = field(default_factory=dict)


class SourceUnavailable(Exception):
    pass


def source(name: str) -> Callable[..., Iterable]:
    """The configured function for a fact source, or SourceUnavailable saying what is missing."""
    path = settings.MONITORING_SOURCES.get(name, "")
    if not path:
        raise SourceUnavailable(
            f"not available yet: no {name} source configured (set MONITORING_SOURCES[{name!r}])"
        )
    try:
        return import_string(path)
    except ImportError as exc:
        raise SourceUnavailable(
            f"not available yet: {name} source {path!r} cannot be imported ({exc})"
        ) from None
