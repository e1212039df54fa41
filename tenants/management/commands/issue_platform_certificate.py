from django.core.management.base import CommandError

from core.commands import PlatformCommand
from tenants.domains.platform_certificate import platform_certificate_issue
from tenants.models import PlatformCertificate


class Command(PlatformCommand):
    help = ("Issue (or renew) the platform wildcard certificate (*.PLATFORM_BASE_DOMAIN and the base) now, "
            "by ACME DNS-01 through PLATFORM_CERT_DNS_PROVIDER.")

    def run(self, *args, **options):
        cert = platform_certificate_issue(actor=self.actor)
        if cert.last_error:
            kept = (f" The certificate valid until {cert.not_after:%Y-%m-%d %H:%M} UTC stays in place."
                    if cert.status == PlatformCertificate.Status.ISSUED and cert.not_after else "")
            raise CommandError(f"Certificate for {cert} failed: {cert.last_error}{kept}")
        names = ", ".join(cert.names)
        self.stdout.write(f"Issued certificate for {names}, valid until {cert.not_after:%Y-%m-%d %H:%M} UTC.")
