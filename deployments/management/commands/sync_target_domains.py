from core.commands import PlatformCommand
from deployments.engines.aws_domains import AwsDomainsError, aws_domains_sync
from deployments.models import Target
from deployments.services import environment_target


class Command(PlatformCommand):
    help = ("Sync an AWS target's custom domains and platform wildcard now: ACM certificates, the HTTPS "
            "listener's SNI certificates, the *.<base> Route 53 record (normally queued on every change).")

    def add_arguments(self, parser):
        parser.add_argument("--env", required=True)

    def run(self, *args, **options):
        target = environment_target(environment=options["env"])
        if target.kind != Target.Kind.AWS:
            raise AwsDomainsError(
                f"{target.name} is a compose host; its edge is synced by the edge push, not this command."
            )
        if not (target.https_listener_arn or target.hosted_zone_id):
            raise AwsDomainsError(
                f"{target.name} manages no domains: set its https_listener_arn and/or hosted_zone_id "
                "in the admin."
            )
        result = aws_domains_sync(target=target, actor=self.actor)
        done = ", ".join(f"{k}: {len(v) if isinstance(v, list) else v}" for k, v in result.summary().items())
        self.stdout.write(f"Domains on {target.name}: {done or 'already in sync'}.")
        if result.over_quota:
            raise AwsDomainsError(
                f"{len(result.over_quota)} domain(s) not attached, the listener's certificate quota "
                f"(AWS_ALB_CERTIFICATE_LIMIT) is reached: {', '.join(result.over_quota[:10])}. Raise the "
                "quota with AWS and the setting, or serve them from a second load balancer."
            )
