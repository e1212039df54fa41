from tenants.domains.edge import edge_render
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = "Render the nginx edge config from the active domains, validate it (nginx -t), swap it in, reload."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true",
                            help="only render and validate; change nothing")
        parser.add_argument("--no-reload", action="store_true", help="swap the config in but do not reload")

    def run(self, *args, **options):
        result = edge_render(actor=self.actor, check_only=options["check"], reload=not options["no_reload"])
        if options["check"]:
            state = "differs from" if result.changed else "matches"
            self.stdout.write(f"Edge config valid for {result.domains} domain(s); it {state} the live one.")
        elif result.changed:
            how = "reloaded" if result.reloaded else "not reloaded"
            self.stdout.write(f"Edge config written for {result.domains} domain(s) and {how}: {result.path}")
        else:
            self.stdout.write(f"Edge config unchanged ({result.domains} domain(s)).")
