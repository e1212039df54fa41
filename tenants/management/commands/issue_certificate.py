from django.core.management.base import CommandError

from tenants.domains.certificates import certificate_issue
from tenants.domains.services import domain_normalise
from tenants.management.base import TenantCommand
from tenants.models import Certificate, Domain


class Command(TenantCommand):
    help = "Issue (or renew) the certificate of a verified custom domain now, from ACME_DIRECTORY_URL."

    def add_arguments(self, parser):
        parser.add_argument("domain")

    def run(self, *args, **options):
        name = domain_normalise(options["domain"])
        domain = Domain.objects.select_related("tenant").filter(domain=name, kind=Domain.Kind.CUSTOM).first()
        if domain is None:
            raise CommandError(f"No custom domain {name!r} (see the admin's domain list).")
        cert = certificate_issue(domain=domain, actor=self.actor)
        if cert.status != Certificate.Status.ISSUED or cert.last_error:
            raise CommandError(f"Certificate for {name} failed: {cert.last_error}")
        self.stdout.write(f"Issued certificate for {name}, valid until {cert.not_after:%Y-%m-%d %H:%M} UTC.")
