from django.utils import timezone

from backups.management.commands._progress import human_bytes
from backups.selectors import backups_list
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "List backups, newest first (one tenant's, or all)."

    def add_arguments(self, parser):
        parser.add_argument("subdomain", nargs="?")
        parser.add_argument("--limit", type=int, default=50)

    def run(self, *args, **options):
        tenant = self.tenant_by_subdomain(options["subdomain"]) if options["subdomain"] else None
        rows = list(backups_list(tenant=tenant, limit=options["limit"]))
        now = timezone.now()
        self.stdout.write(
            f"{'id':36}  {'kind':8}  {'tenant':20}  {'status':8}  {'size':>9}  {'age':>8}  sha256"
        )
        for b in rows:
            age = (now - b.created_at).total_seconds()
            age_text = f"{age / 3600:.1f} h" if age >= 3600 else f"{age / 60:.0f} min"
            self.stdout.write(
                f"{b.pk!s:36}  {b.kind:8}  {(b.tenant_label or '-'):20}  {b.status:8}  "
                f"{human_bytes(b.size_bytes):>9}  {age_text:>8}  {b.sha256[:12]}"
                + (f"  ({b.status_reason[:80]})" if b.status == b.Status.FAILED else "")
            )
        self.stdout.write(f"{len(rows)} backup(s)")
