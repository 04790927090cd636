"""The overview's charts as inline SVG, drawn in Python: no script, no build step.

Each minute with data is an element carrying `data-minute` (ISO 8601, UTC) and its
values, so a reader (or a test) can find the point for a given minute; a `<title>` gives
the tooltip. Text is escaped even though it is only numbers and fixed words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from boundq.server.ui.data import Minute

WIDTH, HEIGHT = 720, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 12, 24
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
PICKUP_FLOOR_S, PICKUP_CEIL_S = 0.005, 60.0  # the histogram's finite bucket bounds


def minute_key(minute: Minute) -> str:
    return minute.at.strftime("%Y-%m-%dT%H:%MZ")


def nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "> 60 s"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def _frame(label: str, y_ticks: Sequence[tuple[float, str]], minutes: Sequence[Minute]) -> list[str]:
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">']
    for y, text in y_ticks:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{escape(text)}</text>')
    if minutes:
        slot = PLOT_W / len(minutes)
        for i in range(0, len(minutes), 15):
            x = LEFT + i * slot
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}">'
                         f'{escape(minutes[i].at.strftime("%H:%M"))}</text>')
        parts.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" '
                     f'text-anchor="end">{escape(minutes[-1].at.strftime("%H:%M"))} UTC</text>')
    return parts


def throughput_svg(minutes: Sequence[Minute]) -> Markup:
    """Jobs finished per minute (succeeded, and failed on top)."""
    top = nice_ceiling(max((m.finished for m in minutes), default=0))
    base = TOP + PLOT_H

    def y(value: float) -> float:
        return base - value / top * PLOT_H

    ticks = [(y(v), f"{v:g}") for v in (0, top / 2, top)]
    parts = _frame("jobs finished per minute", ticks, minutes)
    slot = PLOT_W / max(len(minutes), 1)
    for i, m in enumerate(minutes):
        if not m.finished:
            continue
        x = LEFT + i * slot + 1
        title = f"{m.at:%H:%M} UTC: {m.finished} finished ({m.failed} failed)"
        parts.append(f'<g class="minute" data-minute="{minute_key(m)}" '
                     f'data-finished="{m.finished}" data-failed="{m.failed}">'
                     f'<title>{escape(title)}</title>')
        parts.append(f'<rect class="ok" x="{x:.1f}" y="{y(m.succeeded):.1f}" '
                     f'width="{slot - 2:.1f}" height="{base - y(m.succeeded):.1f}"/>')
        if m.failed:
            parts.append(f'<rect class="dead" x="{x:.1f}" y="{y(m.finished):.1f}" '
                         f'width="{slot - 2:.1f}" height="{y(m.succeeded) - y(m.finished):.1f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _pickup_y(seconds: float) -> float:
    """Log scale from the smallest bucket bound to the largest; beyond it, the top edge."""
    clamped = min(max(seconds, PICKUP_FLOOR_S), PICKUP_CEIL_S * 2)
    span = math.log10(PICKUP_CEIL_S * 2) - math.log10(PICKUP_FLOOR_S)
    return TOP + PLOT_H - (math.log10(clamped) - math.log10(PICKUP_FLOOR_S)) / span * PLOT_H


def pickup_svg(minutes: Sequence[Minute]) -> Markup:
    """Pickup (claim time minus run_at) p50 and p99 per minute, log scale; the values are
    the upper bounds of the histogram buckets that hold them."""
    ticks = [(_pickup_y(s), format_seconds(s)) for s in (0.01, 0.1, 1.0, 10.0)]
    parts = _frame("pickup p50 and p99 per minute", ticks, minutes)
    slot = PLOT_W / max(len(minutes), 1)
    for series, attribute in (("p99", "pickup_p99_s"), ("p50", "pickup_p50_s")):
        run: list[str] = []
        marks: list[str] = []
        for i, m in enumerate(minutes):
            value: float | None = getattr(m, attribute)
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline class="{series}" points="{" ".join(run)}"/>')
                run = []
                continue
            x, y = LEFT + (i + 0.5) * slot, _pickup_y(value)
            run.append(f"{x:.1f},{y:.1f}")
            title = f"{m.at:%H:%M} UTC: {series} {format_seconds(value)}"
            marks.append(f'<circle class="{series}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                         f'data-minute="{minute_key(m)}" data-seconds="{value:g}">'
                         f'<title>{escape(title)}</title></circle>')
        if len(run) > 1:
            parts.append(f'<polyline class="{series}" points="{" ".join(run)}"/>')
        parts.extend(marks)
    parts.append("</svg>")
    return Markup("".join(parts))
