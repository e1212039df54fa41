"""Progress lines for long backup runs: tenants done / total, bytes, ETA."""

import time


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_seconds(seconds: float) -> str:
    """A lag or an age as people read it: 45 s, 12 min, 3.0 h, 2.1 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class ProgressPrinter:
    def __init__(self, stream, total: int):
        self.stream, self.total, self.done, self.bytes = stream, total, 0, 0
        self.started = time.monotonic()

    def bytes_seen(self, current: int, elapsed: float) -> None:
        rate = current / elapsed if elapsed else 0
        self.stream.write(f"  {human_bytes(current)} dumped ({human_bytes(rate)}/s)")

    def tenant_done(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        self.stream.write(
            f"[{self.done}/{self.total}] {human_bytes(self.bytes)} total, "
            f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s"
        )


class PhasePrinter:
    """Progress of a long restore by phase: bytes checked or restored of the total, with an ETA."""

    LABELS = {
        "verify": "checking sha256",
        "restore": "restoring (checking sha256 on the way)",
        "check": "comparing with the manifest",
    }

    def __init__(self, stream):
        self.stream, self.started = stream, {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        label = self.LABELS.get(phase, phase)
        if phase == "check":
            self.stream.write(f"  {label}: {total} schema(s)")
            return
        elapsed = time.monotonic() - self.started.setdefault(phase, time.monotonic())
        if not done:
            return  # the phase starts
        eta = elapsed / done * (total - done)
        share = 100 * done / total if total else 100
        finishing = ""
        if phase == "restore" and done >= total:
            finishing = " (pg_restore now builds indexes and constraints)"
        self.stream.write(
            f"  {label}: {human_bytes(done)} of {human_bytes(total)} ({share:.0f}%), "
            f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s{finishing}"
        )
