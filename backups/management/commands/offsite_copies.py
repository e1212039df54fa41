from django.core.management.base import CommandError

from backups.management.commands._progress import human_bytes
from backups.models import OffsiteCopy
from backups.offsite_storage import offsite_storage
from backups.services import offsite
from core.commands import PlatformCommand


class Command(PlatformCommand):
    help = (
        "Off-site copies: show their state and copy lag; --sweep queues what is not copied yet (and "
        "retries failures), --now copies them here and now, --verify N reads back the N copies checked "
        "longest ago, --prune applies the off-site retention (--dry-run lists it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sweep", action="store_true", help="Queue missing copies and due retries")
        parser.add_argument("--now", action="store_true", help="Copy every queued copy in this process")
        parser.add_argument("--verify", type=int, default=0, metavar="N", help="Read back N copies")
        parser.add_argument("--prune", action="store_true", help="Apply the off-site retention")
        parser.add_argument("--dry-run", action="store_true", help="With --prune: only list")

    def run(self, *args, **options):
        store = offsite_storage()  # refuses, with what to set, when there is none
        if options["verify"] < 0:
            raise CommandError("--verify takes a number of copies (1 or more).")
        if options["sweep"] or options["now"]:
            result = offsite.offsite_sweep(actor=self.actor)
            self.stdout.write(
                f"Queued {result.queued} new copy(ies), retried {result.retried}, requeued {result.requeued}"
            )
        if options["now"]:
            for copy in OffsiteCopy.objects.filter(status=OffsiteCopy.Status.QUEUED).order_by("queued_at"):
                done = offsite.offsite_copy_run(copy_id=str(copy.pk), actor=self.actor)
                self.stdout.write(f"  {done.status} {done.location} {done.status_reason}".rstrip())
        if options["verify"]:
            for copy in offsite.offsite_reverify(actor=self.actor, batch=options["verify"]):
                self.stdout.write(f"  {copy.status} {copy.location} {copy.status_reason}".rstrip())
        if options["prune"]:
            plan = offsite.offsite_prune(dry_run=options["dry_run"], actor=self.actor)
            verb = "would delete" if options["dry_run"] else "deleted"
            for copy, reason in plan:
                self.stdout.write(f"  {verb} {copy.location} ({reason})")
            freed = human_bytes(sum(c.size_bytes for c, _ in plan))
            self.stdout.write(f"{verb.capitalize()} {len(plan)} off-site copy(ies) ({freed})")
        lag, waiting = offsite.offsite_lag()
        counts = {s: OffsiteCopy.objects.filter(status=s).count() for s in OffsiteCopy.Status.values}
        self.stdout.write(
            f"{store.describe()}: "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"; {waiting} object(s) not yet off-site, copy lag {lag:.0f} s"
        )
        if counts[OffsiteCopy.Status.FAILED] or counts[OffsiteCopy.Status.CORRUPT]:
            raise CommandError(
                f"{counts['failed']} failed and {counts['corrupt']} corrupt off-site copies; see Backups › "
                "Off-site copies in the admin for the reasons."
            )
