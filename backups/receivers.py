"""How backups hook into the tenancy core's signals."""

from typing import Any

from backups.services.retention import backup_before_erasure
from core.audit import Actor
from tenants.models import Tenant


def final_backup_before_drop(sender: Any, *, tenant: Tenant, actor: Actor, **kwargs: Any) -> None:
    # Raising here (the backup failed) stops the drop: the core sends with send(), not send_robust().
    backup_before_erasure(tenant=tenant, actor=actor)
