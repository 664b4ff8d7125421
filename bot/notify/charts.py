"""The digest's chart: the KPIs of the largest deliveries over time, as a PNG.

Pure (data in, bytes out) and built on matplotlib's object API with the Agg canvas:
no pyplot, so no global figure state and no GUI backend, and safe off the main
thread. matplotlib is imported off the critical path: by `load()` in a background
thread when the sender starts with the digest on, or else at the first chart; never
by a server that does not post digests.
"""

from __future__ import annotations

import io
from datetime import timedelta

from bot.domain.times import zone
from bot.services.digest_views import DigestChart

# The four rates of SPEC section 6, in the order of the point tuples.
PANELS = ("Delivered %", "Bounces + errors %", "Open rate %", "Click-through rate %")
WIDTH_IN, HEIGHT_IN, DPI = 10.0, 6.0, 100


def load() -> None:
    """Import what drawing needs (0.5–1 s of matplotlib), so the first digest need not."""
    import matplotlib.backends.backend_agg
    import matplotlib.dates
    import matplotlib.figure  # noqa: F401


def kpi_chart_png(chart: DigestChart) -> bytes:
    """A 2 × 2 grid, one panel per rate, one line per delivery.

    A rate that is None (nothing to divide by) leaves a gap in its line rather than a
    false zero.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.figure import Figure

    tz = zone(chart.tz)
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.2, hspace=0.35, wspace=0.15)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True)
    series = chart.series
    moments = sorted({p.at for line in series for p in line.points})
    times = [[p.at.astimezone(tz) for p in line.points] for line in series]
    for index, ax in enumerate(axes.flat):
        ax.set_title(PANELS[index], fontsize=10)
        ax.grid(True, alpha=0.3)
        for line, xs in zip(series, times, strict=True):
            ys = [float("nan") if p.rates[index] is None else p.rates[index] for p in line.points]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=line.label)
        if len(moments) == 1:  # the first digest: one point, centred in a two-hour span
            only = moments[0].astimezone(tz)
            ax.set_xlim(only - timedelta(hours=1), only + timedelta(hours=1))
        # matplotlib.dates ships without annotations on these constructors.
        ax.xaxis.set_major_locator(AutoDateLocator(tz=tz, minticks=3, maxticks=8))  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(DateFormatter("%d %b\n%H:%M", tz=tz))  # type: ignore[no-untyped-call]
        ax.tick_params(labelsize=8)
    if series:
        fig.legend(
            *axes.flat[0].get_legend_handles_labels(),
            loc="lower center",
            ncols=min(len(series), 3),
            fontsize=8,
        )
    fig.suptitle(chart.title, fontsize=12)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
