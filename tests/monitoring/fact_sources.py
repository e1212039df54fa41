"""Stand-ins for the backup, drill, deployment and certificate selectors other apps will provide,
wired through settings.MONITORING_SOURCES exactly as the real ones will be."""

from datetime import UTC, datetime, timedelta

FACTS: dict[str, list] = {"backups": [], "drills": [], "deployments": [], "certificates": []}


def backups():
    return FACTS["backups"]


def drills():
    return FACTS["drills"]


def deployments():
    return FACTS["deployments"]


def certificates():
    return FACTS["certificates"]


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)
