"""Small inline SVG charts for the admin (no JavaScript, no external files)."""

from collections.abc import Callable

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

PALETTE = ["#2e90fa", "#12b76a", "#f79009", "#d92d20", "#7a5af8", "#667085", "#ee46bc", "#06aed4"]


def bar_chart(items: list[tuple[str, int]], *, width: int = 320, row: int = 22) -> SafeString:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return mark_safe('<p class="help">No data yet.</p>')
    top = max(v for _, v in items) or 1
    label_w, bar_w = 130, width - 130 - 40
    parts = [
        f'<svg role="img" class="mon-chart" width="{width}" height="{row * len(items)}" '
        f'viewBox="0 0 {width} {row * len(items)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(items):
        y = i * row
        w = max(1, round(bar_w * value / top)) if value else 0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12" fill="currentColor">'
            f"{escape(label)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="{row - 8}" rx="2" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {value}</title></rect>'
            f'<text x="{label_w + w + 4}" y="{y + 15}" font-size="12" fill="currentColor">{value}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def uptime_strip(buckets: list[tuple[int, int] | None], *, cell: int = 10) -> SafeString:
    """One cell per hour (oldest first): green all up, amber some failures, red mostly down, grey no data."""
    width = cell * len(buckets)
    parts = [
        f'<svg role="img" class="mon-strip" width="{width}" height="14" viewBox="0 0 {width} 14" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, bucket in enumerate(buckets):
        if bucket is None or bucket[0] == 0:
            color, title = "#d0d5dd", "no probes"
        else:
            total, up = bucket
            share = up / total
            color = "#12b76a" if share == 1 else "#f79009" if share >= 0.5 else "#d92d20"
            title = f"{up}/{total} probes up"
        parts.append(
            f'<rect x="{i * cell}" y="0" width="{cell - 2}" height="14" rx="1" fill="{color}">'
            f"<title>{title}</title></rect>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def sparkline(values: list[float | None], *, width: int = 160, height: int = 28) -> SafeString:
    """A latency line; gaps where there is no value."""
    points = [v for v in values if v is not None]
    if not points:
        return mark_safe('<span class="help">-</span>')
    top = max(points) or 1
    step = width / max(1, len(values) - 1)
    coords = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    return format_html(
        '<svg role="img" class="mon-spark" width="{}" height="{}" viewBox="0 0 {} {}" '
        'xmlns="http://www.w3.org/2000/svg"><title>max {} ms</title>'
        '<polyline fill="none" stroke="#2e90fa" stroke-width="1.5" points="{}"/></svg>',
        width,
        height,
        width,
        height,
        round(top),
        coords,
    )


def stacked_columns(
    labels: list[str],
    series: list[tuple[str, list[float]]],
    *,
    fmt: Callable[[float], str] = str,
    tip: Callable[[int, str, float], str] | None = None,
    cell: int = 9,
    height: int = 80,
) -> SafeString:
    """One column per label (oldest first), each stacked from the series' values; the y axis says
    the tallest column's total. `tip(i, series name, value)` is the hover text of a segment."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    if not any(totals):
        return mark_safe('<p class="help">No data yet.</p>')
    top = max(totals)
    left, axis, legend = 62, 16, 16
    width = left + cell * len(labels)
    full = height + axis + legend
    parts = [
        # Scales down to its card's width (the height follows the viewBox).
        f'<svg role="img" class="mon-columns" width="100%" style="max-width:{width}px" '
        f'viewBox="0 0 {width} {full}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left - 6}" y="10" text-anchor="end" font-size="11" fill="currentColor">'
        f"{escape(fmt(top))}</text>"
        f'<text x="{left - 6}" y="{height}" text-anchor="end" font-size="11" fill="currentColor">0</text>'
        f'<line x1="{left}" y1="{height + 0.5}" x2="{width}" y2="{height + 0.5}" stroke="#98a2b3"/>'
        f'<line x1="{left}" y1="4.5" x2="{width}" y2="4.5" stroke="#d0d5dd" stroke-dasharray="2 3"/>',
    ]
    for i, label in enumerate(labels):
        y = height
        for k, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            h = max(1, round((height - 5) * value / top))
            y -= h
            title = tip(i, name, value) if tip else f"{label} {name}: {fmt(value)}"
            parts.append(
                f'<rect x="{left + i * cell}" y="{y}" width="{cell - 2}" height="{h}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(title)}</title></rect>'
            )
    parts.append(
        f'<text x="{left}" y="{height + 12}" font-size="11" fill="currentColor">{escape(labels[0])}</text>'
        f'<text x="{width}" y="{height + 12}" text-anchor="end" font-size="11" fill="currentColor">'
        f"{escape(labels[-1])}</text>"
    )
    x = 0
    for k, (name, _) in enumerate(series):
        parts.append(
            f'<rect x="{x}" y="{height + axis + 3}" width="9" height="9" fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="{x + 13}" y="{height + axis + 11}" font-size="11" fill="currentColor">'
            f"{escape(name)}</text>"
        )
        x += 13 + 7 * len(name) + 14
    parts.append("</svg>")
    return mark_safe("".join(parts))
