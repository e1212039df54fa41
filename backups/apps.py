from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backups.receivers import final_backup_before_drop
        from backups.selectors import backup_facts, backup_sizes_by_day, drill_facts
        from core.facts import fact_source_register
        from tenants.signals import schema_pre_drop

        schema_pre_drop.connect(final_backup_before_drop, dispatch_uid="backups.final_backup")
        fact_source_register("backups", backup_facts)
        fact_source_register("drills", drill_facts)
        fact_source_register("backup_sizes", backup_sizes_by_day)
        # Off-site copies: the rules' fact, and the /metrics gauges (registered on import).
        from backups.offsite_selectors import offsite_facts

        fact_source_register("offsite", offsite_facts)
        # The continuous archive (backups/pitr): the platform RPO, for /metrics and its alert rule.
        from backups.pitr.selectors import wal_archive_facts

        fact_source_register("wal_archive", wal_archive_facts)
