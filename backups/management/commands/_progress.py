"""Progress lines for long backup runs: tenants done / total, bytes, ETA."""

import time


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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
