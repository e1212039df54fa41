from backups.management.commands._progress import PhasePrinter, human_bytes
from backups.services.database import database_restore, database_source
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Restore a whole-database (or platform) backup into a new database on the same server, "
        "checked against its manifest; never over the live database."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--backup", metavar="ID", help="Backup id (see list_backups)")
        source.add_argument(
            "--object",
            metavar="KEY",
            help="The backup's key in the store (database/<time>-<id>.dump), for when the database "
            "that listed it is lost; its manifest is read from the store",
        )
        parser.add_argument(
            "--target-database", required=True, metavar="NAME", help="New (or empty) database to restore into"
        )

    def run(self, *args, **options):
        source = database_source(backup_id=options["backup"], object_key=options["object"])
        target = options["target_database"]
        self.stdout.write(
            f"Restoring {source.kind} backup {source.backup_id} ({human_bytes(source.size_bytes)}) "
            f"into new database {target!r}"
        )
        progress = PhasePrinter(self.stdout)
        done = database_restore(source=source, target=target, actor=self.actor, progress=progress)
        self.stdout.write(
            f"Restored {done['kind']} backup {done['backup']} into {target!r}: {done['schemas']} schema(s), "
            f"{done['tables']} tables, {done['rows']} rows, all matching the manifest, "
            f"in {done['seconds']:.1f} s."
        )
        self.stdout.write("Next: point DATABASE_URL at it and run migrate_schemas (docs/backups.md).")
