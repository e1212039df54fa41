"""How backups hook into the tenancy core's signals."""

from backups.services import backup_before_erasure


def final_backup_before_drop(sender, *, tenant, actor, **kwargs) -> None:
    # Raising here (the backup failed) stops the drop: the core sends with send(), not send_robust().
    backup_before_erasure(tenant=tenant, actor=actor)
