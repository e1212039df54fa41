from django.core.management.base import CommandError

from deployments.management.base import DeploymentCommand
from deployments.services import release_create


class Command(DeploymentCommand):
    help = "Record a release: a semantic version and an image per service (CI calls this after a build)."

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument(
            "--image",
            action="append",
            default=[],
            metavar="SERVICE=REF",
            help="backend=registry/api:1.4.0@sha256:... (once per service)",
        )
        parser.add_argument("--git-sha", default="")
        parser.add_argument("--notes", default="")
        parser.add_argument(
            "--breaking-migrations",
            action="store_true",
            help="the previous release cannot run on this release's schema",
        )

    def run(self, *args, **options):
        images = {}
        for item in options["image"]:
            service, sep, ref = item.partition("=")
            if not sep or not service.strip():
                raise CommandError(f"--image {item!r} must be SERVICE=REF, e.g. backend=registry/api:1.4.0.")
            images[service.strip()] = ref
        release = release_create(
            version=options["version"],
            images=images,
            git_sha=options["git_sha"],
            notes=options["notes"],
            backward_compatible_migrations=not options["breaking_migrations"],
            actor=self.actor,
        )
        self.stdout.write(f"Release {release.version} recorded ({len(images)} image(s))")
