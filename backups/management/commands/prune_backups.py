from backups.management.commands._progress import human_bytes
from backups.services.retention import backup_prune
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Delete backups beyond each plan's retention (and expired backups of deleted tenants)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only list what would be deleted")

    def run(self, *args, **options):
        plan = backup_prune(dry_run=options["dry_run"], actor=self.actor)
        verb = "Would delete" if options["dry_run"] else "Deleted"
        for backup, reason in plan.delete:
            self.stdout.write(
                f"  {verb.lower()} {backup.pk} {backup.tenant_label or backup.kind} "
                f"{backup.created_at:%Y-%m-%d %H:%M} ({reason})"
            )
        for export, reason in plan.exports:
            self.stdout.write(
                f"  {verb.lower()} export {export.pk} of {export.tenant_label} "
                f"{export.created_at:%Y-%m-%d %H:%M} ({reason})"
            )
        freed = sum(b.size_bytes for b, _ in plan.delete) + sum(e.size_bytes for e, _ in plan.exports)
        self.stdout.write(
            f"{verb} {len(plan.delete)} backup(s) and {len(plan.exports)} export(s) ({human_bytes(freed)}), "
            f"kept {len(plan.keep)} backup(s)"
        )
