"""What every figure shares: the canvas, the colours of each system, log axes with plain
numbers, slanted category labels that stay under their bar, and a legend of systems.

Built on `matplotlib.figure.Figure` (no pyplot, no global state, the Agg canvas when
saved), so figures work the same in the report writers, in tests and in the notebook.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

COLORS = {"boundq": "#1f6feb", "pgqueuer": "#d29922", "procrastinate": "#8957e5",
          "2xx": "#2da44e", "429": "#d29922", "503": "#cf222e", "other": "#000000"}
NAMES = {"boundq": "boundq", "pgqueuer": "PgQueuer", "procrastinate": "procrastinate"}
PCT_STYLES = {"p50": "-", "p95": "--", "p99": ":"}
NEUTRAL = "#57606a"


def new_figure(cols: int = 1, width: float = 7.0, height: float = 4.0
               ) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * cols if cols > 1 else width, height), layout="constrained")
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def plain_number(value: float, _pos: object = None) -> str:
    """10, 20, 0.5, 1,000: what a reader expects on a latency or rate axis."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def log_axis(ax: Axes, which: str = "y") -> None:
    """Log scale with plain numbers at 1-2-5 steps of each decade, or at every integer
    multiple when the data span less than a decade (1-2-5 would leave one label or none).
    Call after plotting: the steps follow the data's range."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    highest = ax.dataLim.y1 if which == "y" else ax.dataLim.x1
    if not highest > 0:
        return  # nothing positive to show on a log scale (e.g. no answer of that kind)
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    low, high = ax.get_ylim() if which == "y" else ax.get_xlim()
    narrow = low > 0 and high / low < 10
    subs = tuple(float(s) for s in range(1, 10)) if narrow else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def slant_labels(ax: Axes, rotation: float = 30, size: float = 8) -> None:
    """Rotate the category labels of the x axis so each one ends under its own bar.
    Rotated about its centre (matplotlib's default), a long label reaches under the next
    bar and reads as that bar's."""
    for label in ax.get_xticklabels():
        label.set_rotation(rotation)
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
        label.set_fontsize(size)


def system_colors(df: pd.DataFrame) -> list[str]:
    systems = df["system"] if "system" in df else ["boundq"] * len(df)
    return [COLORS.get(str(s), COLORS["boundq"]) for s in systems]


def systems_legend(ax: Axes, systems: Iterable[str]) -> None:
    """A legend of the systems whose colours the bars use."""
    handles = [Patch(color=COLORS.get(s, COLORS["boundq"]), label=NAMES.get(s, s))
               for s in dict.fromkeys(systems)]
    ax.legend(handles=handles, fontsize=8)


def systems_of(df: pd.DataFrame) -> list[str]:
    if "system" not in df:
        return ["boundq"]
    return list(dict.fromkeys(df["system"]))


def rows_of(df: pd.DataFrame, system: str) -> pd.DataFrame:
    return df if "system" not in df else df[df["system"] == system]
