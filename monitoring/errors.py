"""Sentry, only when SENTRY_DSN is set; every event carries the release and, when known, the tenant."""

import logging
from typing import TYPE_CHECKING

from core.errors import PlatformError

if TYPE_CHECKING:  # sentry_sdk is imported only when Sentry is on
    from sentry_sdk.types import Event, Hint

logger = logging.getLogger(__name__)
_enabled = False


class MonitoringError(PlatformError):
    """A refused or failed monitoring operation; the message says what to fix."""


def sentry_init(*, dsn: str, release: str, environment: str, traces_sample_rate: float) -> bool:
    global _enabled
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=dsn,
        release=release or None,
        environment=environment or None,
        traces_sample_rate=traces_sample_rate,
        # Never ship request bodies, cookies or user e-mails to a third party by default.
        send_default_pii=False,
        integrations=[DjangoIntegration(), RqIntegration()],
        before_send=_tag_tenant,
    )
    _enabled = True
    return True


def _tag_tenant(event: "Event", hint: "Hint") -> "Event":
    from monitoring.context import current_tenant

    tenant = current_tenant()
    if tenant:
        event.setdefault("tags", {})["tenant"] = tenant
    return event
