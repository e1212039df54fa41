from deployments.management.base import DeploymentCommand
from deployments.services import deployment_run, rollback_create


class Command(DeploymentCommand):
    help = "Put an earlier successful release back (the one before the live one unless --to is given)."

    def add_arguments(self, parser):
        parser.add_argument("--env", required=True)
        parser.add_argument("--to", dest="to_version", help="version to return to")
        parser.add_argument(
            "--confirm-migrations",
            action="store_true",
            help="roll back past a release whose migrations are not backward compatible",
        )

    def run(self, *args, **options):
        deployment = rollback_create(
            environment=options["env"],
            to_version=options["to_version"],
            confirm_migrations=options["confirm_migrations"],
            actor=self.actor,
        )
        self.finish(deployment_run(deployment=deployment, actor=self.actor))
