import sys

from deployments.errors import DeploymentValidationError
from deployments.management.base import DeploymentCommand
from deployments.models import Environment, EnvironmentSecret
from deployments.secrets import environment_secret_delete, environment_secret_set


class Command(DeploymentCommand):
    help = (
        "Set or replace a secret in an environment's secret store, reading the value from stdin "
        "(never from the command line, which shell history and `ps` keep); --delete removes it."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the name stacks refer to, e.g. DB_PASSWORD")
        parser.add_argument("--env", required=True, help="environment name, e.g. production")
        parser.add_argument("--delete", action="store_true", help="remove the secret instead")

    def run(self, *args, **options):
        env = Environment.objects.filter(name=options["env"]).first()
        if env is None:
            known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none yet"
            raise DeploymentValidationError(
                f"No environment named {options['env']!r}. Environments: {known}."
            )
        name = options["name"].strip()
        if options["delete"]:
            secret = EnvironmentSecret.objects.filter(environment=env, name=name).first()
            if secret is None:
                raise DeploymentValidationError(f"{env.name} has no secret {name!r}; nothing to delete.")
            environment_secret_delete(secret=secret, actor=self.actor)
            self.stdout.write(f"Secret {name} deleted from {env.name}")
            return
        if sys.stdin.isatty():
            self.stderr.write(f"Value for {name} (end with Ctrl-D):")
        # One trailing newline is how `echo` and editors end input, not part of the value.
        value = sys.stdin.read().removesuffix("\n")
        environment_secret_set(environment=env, name=name, value=value, actor=self.actor)
        self.stdout.write(f"Secret {name} set for {env.name} (stored encrypted; it is never shown)")
