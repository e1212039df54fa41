"""``migrate_schemas``: the public schema, then every tenant and spare schema, fast.

Replaces django-tenants' command of the same name (``tenants`` comes before ``django_tenants`` in
INSTALLED_APPS). What it does and why it is fast: tenants/schema_migrations/ and
docs/migrations.md. Targeted runs (an app label and migration name, ``--fake``, ``--executor``)
are handed to django-tenants' own command unchanged.
"""

import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django_tenants.management.commands.migrate_schemas import Command as StockCommand

from core.audit import Actor
from tenants.schema_migrations import (
    SchemaMigrationError,
    SchemaResult,
    schemas_migrate,
    schemas_pending,
)


def _applied_text(applied: list[str]) -> str:
    if len(applied) <= 3:
        return ", ".join(applied) or "nothing"
    return f"{len(applied)} migrations ({applied[0]} ... {applied[-1]})"


class Command(BaseCommand):
    help = (
        "Apply migrations to the public schema, then to every tenant schema and every ready spare "
        "schema of the pool, skipping up-to-date schemas in one query and migrating the rest in "
        "parallel worker processes."
    )

    def add_arguments(self, parser):
        stock = "Handed to django-tenants' own command, as are the options below marked so."
        parser.add_argument("app_label", nargs="?", help=stock)
        parser.add_argument("migration_name", nargs="?", help=stock)
        parser.add_argument("--shared", action="store_true", help="Only the public schema.")
        parser.add_argument("--tenant", action="store_true", help="Only tenant and spare schemas.")
        parser.add_argument("-s", "--schema", dest="schema_name", help="Only this schema.")
        parser.add_argument(
            "--noinput", "--no-input", action="store_false", dest="interactive",
            help="Never prompt (this command never does; kept for compatibility).",
        )
        parser.add_argument(
            "--workers", type=int, default=settings.TENANT_MIGRATION_WORKERS,
            help="Worker processes for tenant schemas (default: TENANT_MIGRATION_WORKERS).",
        )
        parser.add_argument(
            "--check", action="store_true", dest="check_unapplied",
            help="List the schemas that are behind and exit 1 if there are any; change nothing.",
        )
        parser.add_argument(
            "--plan", action="store_true",
            help="List the schemas that are behind and what each would get; change nothing.",
        )
        parser.add_argument("--fake", action="store_true", help="Handed to django-tenants' command.")
        parser.add_argument("--fake-initial", action="store_true", help="Handed to django-tenants' command.")
        parser.add_argument(
            "--executor", help="Handed to django-tenants' command: standard, multiprocessing or subprocess.",
        )

    def handle(self, *args, **options):
        if options["app_label"] or options["fake"] or options["fake_initial"] or options["executor"]:
            return self._stock(options)
        schema_name = options["schema_name"]
        shared, tenant = options["shared"], options["tenant"]
        if schema_name and shared:
            raise CommandError("--schema cannot be combined with --shared (use --schema public).")
        if not shared and not tenant:
            shared = tenant = True
        if schema_name:
            shared = tenant = True
        self.verbosity = options["verbosity"]
        scope = {"schema_name": schema_name, "include_public": shared, "include_tenants": tenant}
        try:
            if options["check_unapplied"] or options["plan"]:
                return self._pending(scope, exit_on_pending=options["check_unapplied"])
            report = schemas_migrate(
                actor=Actor.command("migrate_schemas"),
                workers=options["workers"],
                verbosity=options["verbosity"],
                stdout=self.stdout,
                on_result=self._progress if options["verbosity"] >= 1 else None,
                **scope,
            )
        except SchemaMigrationError as exc:
            raise CommandError(str(exc)) from None
        verbosity = options["verbosity"]
        if verbosity >= 2:
            for line in report.groups:
                self.stdout.write(f"plan {line}")
        if report.failed:
            names = ", ".join(r.schema for r in report.failed[:20])
            more = f" and {len(report.failed) - 20} more" if len(report.failed) > 20 else ""
            raise CommandError(
                f"{len(report.failed)} schema(s) failed to migrate and were rolled back: {names}{more}. "
                f"Fix the error shown for each and run migrate_schemas again; the others are migrated. "
                f"({report.summary()})"
            )
        if verbosity >= 1:
            self.stdout.write(report.summary())

    def _progress(self, done: int, total: int, result: SchemaResult) -> None:
        if result.status == "current" and self.verbosity < 2:
            return
        head = f"[{done}/{total}] {result.schema}"
        if result.status == "failed":
            self.stderr.write(f"{head}: FAILED, rolled back: {result.error}")
        elif result.status == "migrated":
            took = f"{result.seconds * 1000:.0f} ms"
            self.stdout.write(f"{head}: applied {_applied_text(result.applied)} ({took})")
        else:
            self.stdout.write(f"{head}: {result.status} ({result.note})")

    def _pending(self, scope, *, exit_on_pending: bool):
        pending = schemas_pending(**scope)
        for item in pending:
            self.stdout.write(f"{item.schema} ({item.kind}): {_applied_text(item.migrations)} to apply")
        self.stdout.write(f"{len(pending)} schema(s) behind the code's migrations.")
        if pending and exit_on_pending:
            sys.exit(1)

    def _stock(self, options):
        self.stderr.write("Running django-tenants' own migrate_schemas (targeted or --fake/--executor run).")
        stock_options = {
            k: v for k, v in options.items()
            if k in ("app_label", "migration_name", "fake", "fake_initial", "executor", "schema_name",
                     "shared", "tenant", "interactive", "verbosity", "check_unapplied", "plan")
        }
        call_command(StockCommand(), stdout=self.stdout, stderr=self.stderr, **stock_options)
