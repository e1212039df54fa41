"""Stand-ins for the backup, drill, deployment and certificate selectors of the other apps, put in
the fact-source registry (core.facts) in place of the real ones with `fact_sources_replaced(WIRED)`."""

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


WIRED = {"backups": backups, "drills": drills, "deployments": deployments, "certificates": certificates}
