"""Charts as inline SVG, drawn on the server: nothing to fetch, no script, no library.

Each function takes plain numbers and returns SVG markup (`markupsafe.Markup`,
every text escaped). Colours come from CSS classes (`static/ui.css`), so the
page's Content-Security-Policy needs no inline style. A `<title>` on each bar
and point is its tooltip. The SVG scales to its container (viewBox), so the
same chart fits a phone and a desktop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

W, H = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 24


@dataclass(frozen=True)
class Series:
    key: str  # CSS class suffix: s-<key>
    label: str


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _count(value: float) -> str:
    if value >= 1_000_000:
        return f"{_num(value / 1_000_000)}M"
    if value >= 1000:
        return f"{_num(value / 1000)}k"
    return _num(value)


def duration(seconds: float | None) -> str:
    """`850 ms`, `12 s`, `4.5 min`, `2.1 h`, `3 d`; `-` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{_num(seconds)} s"
    if seconds < 5400:
        return f"{_num(seconds / 60)} min"
    if seconds < 172800:
        return f"{_num(seconds / 3600)} h"
    return f"{_num(seconds / 86400)} d"


def _frame(
    title: str, y_max: float, y_fmt: Callable[[float], str], labels: Sequence[tuple[float, str]]
) -> list[str]:
    """The SVG opening, grid lines with y labels, and the x labels at (fraction, text)."""
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    plot_h = H - TOP - BOTTOM
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_fmt(y_max * frac))}</text>"
        )
    plot_w = W - LEFT - RIGHT
    for frac, text in labels:
        x = LEFT + plot_w * frac
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{H - 6}" text-anchor="middle">{escape(text)}</text>'
        )
    return parts


def _sparse(labels: Sequence[str], n: int, most: int = 6) -> list[tuple[float, str]]:
    """Every k-th of `n` bar labels, at bar centres, so that at most `most` show."""
    if not labels:
        return []
    step = max(1, math.ceil(n / most))
    return [((i + 0.5) / n, labels[i]) for i in range(0, n, step)]


def stacked_bars(
    title: str,
    labels: Sequence[str],
    stacks: Sequence[dict[str, int]],
    series: Sequence[Series],
    line: Series | None = None,
) -> Markup:
    """Bars of `series` stacked per bucket, and `line` (e.g. sent) as a polyline over them."""
    n = max(1, len(stacks))
    tops = [sum(stack.get(s.key, 0) for s in series) for stack in stacks] or [0]
    if line is not None:
        tops += [stack.get(line.key, 0) for stack in stacks]
    y_max = nice_max(max(tops))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.7)
    parts = _frame(title, y_max, _count, _sparse(labels, n))
    for i, stack in enumerate(stacks):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = TOP + plot_h
        for s in series:
            value = stack.get(s.key, 0)
            if value <= 0:
                continue
            h = plot_h * value / y_max
            y -= h
            tip = f"{labels[i] if i < len(labels) else ''}: {s.label} {value}"
            parts.append(
                f'<rect class="s-{s.key}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}"><title>{escape(tip)}</title></rect>'
            )
    if line is not None and stacks:
        points = []
        for i, stack in enumerate(stacks):
            cx = LEFT + (i + 0.5) * slot
            cy = TOP + plot_h * (1 - stack.get(line.key, 0) / y_max)
            points.append((cx, cy, stack.get(line.key, 0), labels[i] if i < len(labels) else ""))
        coords = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _, _ in points)
        parts.append(f'<polyline class="line l-{line.key}" points="{coords}"/>')
        for cx, cy, value, label in points:
            parts.append(
                f'<circle class="dot l-{line.key}" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5">'
                f"<title>{escape(f'{label}: {line.label} {value}')}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(
    title: str,
    x_range: tuple[float, float],
    series: Sequence[tuple[Series, Sequence[tuple[float, float]], bool]],
    x_labels: Sequence[tuple[float, str]],
    y_fmt: Callable[[float], str] = _count,
    hlines: Sequence[tuple[float, Series]] = (),
    vlines: Sequence[tuple[float, Series]] = (),
    y_floor: float = 0.0,
) -> Markup:
    """Lines of (x, y) points over `x_range`; each series dashed or not; horizontal
    lines (a threshold) and vertical ones (an expiry, "now") with their labels."""
    x0, x1 = x_range
    span = (x1 - x0) or 1.0
    ys = [y for _, pts, _ in series for _, y in pts] + [y for y, _ in hlines]
    y_max = nice_max(max(ys, default=0.0) * 1.05)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (min(max(x, x0), x1) - x0) / span

    def py(y: float) -> float:
        return TOP + plot_h * (1 - (max(y, y_floor) - y_floor) / ((y_max - y_floor) or 1.0))

    labels = [((x - x0) / span, text) for x, text in x_labels if x0 <= x <= x1]
    parts = _frame(title, y_max, y_fmt, labels)
    for y, s in hlines:
        parts.append(
            f'<line class="mark m-{s.key}" x1="{LEFT}" y1="{py(y):.1f}" x2="{W - RIGHT}" '
            f'y2="{py(y):.1f}"><title>{escape(f"{s.label}: {y_fmt(y)}")}</title></line>'
        )
        parts.append(
            f'<text class="marklabel m-{s.key}" x="{W - RIGHT - 4}" y="{py(y) - 4:.1f}" '
            f'text-anchor="end">{escape(s.label)}</text>'
        )
    for x, s in vlines:
        if not x0 <= x <= x1:
            continue
        parts.append(
            f'<line class="mark m-{s.key}" x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" '
            f'y2="{TOP + plot_h}"><title>{escape(s.label)}</title></line>'
        )
        parts.append(
            f'<text class="marklabel m-{s.key}" x="{px(x) + 4:.1f}" y="{TOP + 10}">'
            f"{escape(s.label)}</text>"
        )
    for s, pts, dashed in series:
        if not pts:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = " dashed" if dashed else ""
        parts.append(f'<polyline class="line l-{s.key}{dash}" points="{coords}"/>')
        if len(pts) <= 60:
            for x, y in pts:
                parts.append(
                    f'<circle class="dot l-{s.key}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2">'
                    f"<title>{escape(f'{s.label}: {y_fmt(y)}')}</title></circle>"
                )
    parts.append("</svg>")
    return Markup("".join(parts))
