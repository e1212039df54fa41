import json

from deployments.jobs import deploy_job
from deployments.management.base import DeploymentCommand
from deployments.models import Deployment
from deployments.services import (
    deployment_create,
    deployment_plan,
    deployment_run,
    environment_target,
    release_get,
)


class Command(DeploymentCommand):
    help = "Deploy a release to an environment (blue-green by default); rolls back by itself on failure."

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument("--env", required=True, help="environment name, e.g. production")
        parser.add_argument("--strategy", default="blue-green", help="blue-green or rolling")
        parser.add_argument("--plan-only", action="store_true", help="print what would change and stop")
        parser.add_argument("--enqueue", action="store_true", help="run it on the 'long' RQ queue instead")

    def run(self, *args, **options):
        if options["plan_only"]:
            target = environment_target(environment=options["env"])
            plan = deployment_plan(
                target=target, release=release_get(options["version"]), strategy=options["strategy"]
            )
            self.stdout.write(json.dumps(plan, indent=2))
            return
        deployment = deployment_create(
            environment=options["env"],
            version=options["version"],
            strategy=options["strategy"],
            actor=self.actor,
        )
        if options["enqueue"]:
            deploy_job.delay(deployment.pk, *self.actor.job_args)
            self.stdout.write(f"Deployment #{deployment.pk} queued ({Deployment.Status.PLANNED})")
            return
        self.finish(deployment_run(deployment=deployment, actor=self.actor))
