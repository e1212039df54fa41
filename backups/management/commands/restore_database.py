from backups.management.commands._progress import PhasePrinter, human_bytes
from backups.services.database import database_restore, database_source
from tenants.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Restore a whole-database (or platform) backup into a new database on the same server, "
        "checked against its manifest; or, from the continuous archive, the database as it was at a "
        "moment (--to-time) or at the end of a pgBackRest backup (--to-backup). Never over the live one."
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
        source.add_argument(
            "--to-time", metavar="MOMENT", help='Point-in-time recovery, e.g. "2026-12-04 14:03:00+00"'
        )
        source.add_argument("--to-backup", metavar="LABEL", help="The end of a pgBackRest backup (its label)")
        parser.add_argument(
            "--target-database", metavar="NAME", help="New (or empty) database to restore into"
        )
        parser.add_argument(
            "--keep-cluster",
            action="store_true",
            help="(--to-time/--to-backup) leave the scratch cluster running and print where it is",
        )

    def run(self, *args, **options):
        if options["to_time"] or options["to_backup"]:
            return self._pitr(options)
        if not options["target_database"]:
            self.stderr.write("--target-database is required with --backup or --object.")
            raise SystemExit(1)
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

    def _pitr(self, options) -> None:
        from backups.pitr.restore import database_restore_to_time
        from backups.pitr.services import moment_parse

        moment = moment_parse(options["to_time"]) if options["to_time"] else None
        done = database_restore_to_time(
            to_time=moment,
            backup_label=options["to_backup"],
            target=options["target_database"],
            keep_cluster=options["keep_cluster"],
            actor=self.actor,
        )
        where = f"into {done['target']!r}" if done["target"] else "into a scratch cluster"
        self.stdout.write(
            f"Restored the database to {done['to']} {where} (last transaction replayed: "
            f"{done['recovered_to'] or 'none'}): {done['schemas']} schema(s), {done['tables']} tables, "
            f"{done['rows']} rows, the copy matching the scratch cluster, in {done['seconds']:.1f} s."
        )
        if options["keep_cluster"]:
            self.stdout.write(
                f"Scratch cluster left running: port {done['port']} on 127.0.0.1, data {done['data']}, "
                f"database {done['database']!r}. Stop it with: pg_ctl -D {done['data']} stop"
            )
