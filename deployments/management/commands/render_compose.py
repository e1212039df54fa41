from deployments.management.base import DeploymentCommand
from deployments.services import (
    environment_target,
    release_get,
    target_render_compose,
    target_render_proxy_config,
)


class Command(DeploymentCommand):
    help = (
        "Print the docker-compose.yml of an environment (its live release, or --release); "
        "--edge-config prints the release proxy's nginx.conf it mounts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--env", required=True)
        parser.add_argument("--release", help="render with this release's images instead of the live one")
        parser.add_argument(
            "--edge-config", action="store_true", help="print the release proxy's nginx.conf instead"
        )

    def run(self, *args, **options):
        target = environment_target(environment=options["env"])
        if options["edge_config"]:
            self.stdout.write(target_render_proxy_config(target=target), ending="")
            return
        release = release_get(options["release"]) if options["release"] else None
        self.stdout.write(target_render_compose(target=target, release=release), ending="")
