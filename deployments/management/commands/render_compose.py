from deployments.management.base import DeploymentCommand
from deployments.services import environment_target, release_get, target_render_compose


class Command(DeploymentCommand):
    help = "Print the docker-compose.yml of an environment (its live release, or --release)."

    def add_arguments(self, parser):
        parser.add_argument("--env", required=True)
        parser.add_argument("--release", help="render with this release's images instead of the live one")

    def run(self, *args, **options):
        target = environment_target(environment=options["env"])
        release = release_get(options["release"]) if options["release"] else None
        self.stdout.write(target_render_compose(target=target, release=release), ending="")
