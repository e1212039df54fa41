"""Facts one app owns and another watches, through a registry instead of imports.

Backups, restore drills, deployments and certificates belong to their own apps; monitoring's rules,
`/metrics` and dashboard read them without importing those apps. Each producer registers its
selector in its `AppConfig.ready()`:

    fact_source_register("backups", backup_facts)

and a consumer asks `fact_source("backups")()`. A source nobody registered raises
SourceUnavailable, which the rules report as "not available yet" without opening or resolving
incidents.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

FactSource = Callable[..., Iterable[Any]]

# The sources there are, and what each returns.
FACT_SOURCES = {
    "certificates": "certificates() -> Iterable[CertificateFact]",
    "backups": "backups() -> Iterable[BackupFact], one per active tenant",
    "drills": "drills() -> Iterable[DrillFact], the latest per scope",
    "deployments": "deployments(since: datetime) -> Iterable[DeploymentFact]",
    "backup_sizes": "backup_sizes(since: datetime) -> Iterable[BackupSizeDay]",
    "offsite": "offsite() -> Iterable[OffsiteFact], one when a second store is configured, else none",
    "wal_archive": "wal_archive() -> Iterable[WalArchiveFact], the platform database's continuous archive",
}


@dataclass(frozen=True)
class CertificateFact:
    """A certificate the platform manages."""

    tenant_id: str | None
    host: str
    expires_at: datetime
    link: str = ""  # admin path of the certificate or domain


@dataclass(frozen=True)
class BackupFact:
    """A tenant's newest good backup."""

    tenant_id: str
    last_success_at: datetime | None  # None: never backed up
    rpo: timedelta  # how old the newest backup may be (from the plan's backup frequency)
    link: str = ""
    # When the tenant went live: a shop younger than its RPO is not yet missing a backup.
    active_since: datetime | None = None


@dataclass(frozen=True)
class DrillFact:
    """The latest restore drill of one scope."""

    key: str  # what was drilled (a tenant schema, "whole-database", ...)
    finished_at: datetime
    ok: bool
    detail: str = ""
    tenant_id: str | None = None
    link: str = ""


@dataclass(frozen=True)
class DeploymentFact:
    """A deployment that ended."""

    id: str
    environment: str
    status: str  # "succeeded", "failed", "rolled_back", ...
    finished_at: datetime
    detail: str = ""
    link: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackupSizeDay:
    """Verified backups of one kind made on one day (UTC)."""

    day: date
    kind: str
    count: int
    total_bytes: int
    largest_bytes: int


@dataclass(frozen=True)
class OffsiteFailure:
    """An off-site copy that failed (or whose far copy no longer matches its checksum)."""

    key: str  # the object's key
    status: str  # "failed" or "corrupt"
    attempts: int  # failed attempts in a row
    reason: str
    tenant_id: str | None = None
    link: str = ""


@dataclass(frozen=True)
class OffsiteFact:
    """The copies in the second store (another region) and the latest disaster-recovery drill."""

    lag_seconds: float  # how long the oldest object not yet safely off-site has waited (0: none)
    waiting: int  # objects not yet safely off-site
    failures: tuple[OffsiteFailure, ...]
    drill_finished_at: datetime | None  # the latest DR drill (None: never)
    drill_ok: bool
    drill_detail: str = ""
    drill_rto_seconds: float | None = None
    last_passed_drill_at: datetime | None = None
    link: str = ""  # the copies' admin page
    drill_link: str = ""


@dataclass(frozen=True)
class WalArchiveFact:
    """The platform database's continuous WAL archive (pgBackRest): how much could be lost now."""

    configured: bool
    # Seconds since the newest archived WAL segment while newer WAL waits (0: nothing waits);
    # None when nothing was ever archived. This is the platform's RPO at this moment.
    age_seconds: float | None
    failing: bool  # the last archive attempt failed
    detail: str = ""
    link: str = ""


class SourceUnavailable(Exception):
    pass


_registry: dict[str, FactSource] = {}


def fact_source_register(name: str, function: FactSource) -> None:
    if name not in FACT_SOURCES:
        raise ValueError(f"Unknown fact source {name!r}; the sources are: {', '.join(FACT_SOURCES)}.")
    _registry[name] = function


def fact_source(name: str) -> FactSource:
    """The registered function for a fact source, or SourceUnavailable saying what is missing."""
    try:
        return _registry[name]
    except KeyError:
        raise SourceUnavailable(
            f"not available yet: no {name} source registered (its app is not installed)"
        ) from None


@contextmanager
def fact_sources_replaced(sources: Mapping[str, FactSource | None]) -> Iterator[None]:
    """Stand-in sources for tests and benches (None: unregistered); the real ones come back after."""
    saved = dict(_registry)
    for name, function in sources.items():
        if function is None:
            _registry.pop(name, None)
        else:
            fact_source_register(name, function)
    try:
        yield
    finally:
        _registry.clear()
        _registry.update(saved)
