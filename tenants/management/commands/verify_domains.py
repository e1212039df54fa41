from django.core.management.base import CommandError

from tenants.domains import services as domains
from tenants.management.base import TenantCommand
from tenants.models import Domain


class Command(TenantCommand):
    help = "Check custom domains now (all that are due, or one with --domain) and move their status on."

    def add_arguments(self, parser):
        parser.add_argument("--domain", help="check only this domain (e.g. shop.example.com)")
        parser.add_argument("--all", action="store_true", help="check every custom domain, due or not")

    def run(self, *args, **options):
        if options["domain"]:
            name = domains.domain_normalise(options["domain"])
            found = Domain.objects.select_related("tenant").filter(domain=name, kind=Domain.Kind.CUSTOM)
            if not found:
                raise CommandError(f"No custom domain {name!r} (see the admin's domain list).")
            targets = list(found)
        elif options["all"]:
            targets = list(
                Domain.objects.filter(kind=Domain.Kind.CUSTOM)
                .exclude(status=Domain.Status.DISABLED).select_related("tenant")
            )
        else:
            targets = domains.domains_due()
        results = domains.domains_verify(domains=targets, actor=self.actor)
        if options["domain"]:
            result = results[0]
            self.stdout.write(result.message)
            if result.domain is not None and result.domain.status in domains.UNVERIFIED:
                raise CommandError(f"{name} is not verified yet.")
            return
        changed = sum(r.changed for r in results)
        self.stdout.write(f"Checked {len(results)} domain(s); {changed} changed status.")
