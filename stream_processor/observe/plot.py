"""The run's plot (`--plot`): each event's in-order latency beside its ideal, and the
in-flight count, over the run, drawn as a PNG with matplotlib (the optional `[plot]`
extra). It draws the run's observations: the series in `trace.RunTrace`, the figures
in `observations.RunObservations`.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from stream_processor.observe.trace import Decimated

log = logging.getLogger(__name__)


def draw_run(observations, path: str | Path, title: str = "stream_processor run") -> Path:
    """Write the run's plot as a PNG: latency beside its ideal, and the in-flight count."""
    trace = observations.trace
    figure_class = _matplotlib_figure()
    figure = figure_class(figsize=(11, 7.5), dpi=110, layout="constrained")
    latency_axes, in_flight_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _draw_latency(latency_axes, trace)
    _draw_in_flight(in_flight_axes, trace)
    figure.suptitle(f"{title}\n{headline(observations)}", fontsize=10)
    path = Path(path)
    figure.savefig(path, format="png")
    log.info("run plot written to %s", path)
    return path


def check_plotting() -> None:
    """Fail before a run starts, not after it ends, if the plot cannot be drawn."""
    _matplotlib_figure()


def _matplotlib_figure():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("drawing the run plot needs matplotlib: pip install 'stream_processor[plot]'") from exc
    # No display needed. The figure below is drawn without pyplot, so Agg matters only to
    # pyplot users later; if pyplot is loaded already, switching would close its figures.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def headline(observations) -> str:
    """The key figures, for the plot's title."""
    span = observations.span_s
    parts = [f"{observations.written} events ({observations.errors} errors)", f"span {span:.2f} s"]
    ideal = observations.ideal.span if observations.ideal is not None and observations.ideal.count else None
    if ideal is not None:
        efficiency = f", efficiency {ideal / span:.1%}" if span > 0 else ""
        parts.append(f"ideal {ideal:.2f} s{efficiency}")
    max_latency = f"max latency {observations.latency.max:.3f} s"
    if ideal is not None:
        max_latency += f" (ideal {observations.ideal_latency.max:.3f} s)"
    peak = max((point.in_flight for point in observations.trace.in_flight.samples()), default=0)
    parts += [max_latency, f"peak in flight {peak}"]
    return "   ".join(parts)


def _draw_latency(axes, trace) -> None:
    # Sorted by time: an event's ideal may have come in after later events were written.
    points = sorted(trace.latencies.samples())
    at = [point.at_s for point in points]
    axes.plot(at, [point.latency_s for point in points], lw=1.2, color="tab:blue", label="measured")
    if any(point.ideal_latency_s is not None for point in points):
        ideal = [math.nan if point.ideal_latency_s is None else point.ideal_latency_s for point in points]
        axes.plot(at, ideal, lw=1.0, ls="--", color="tab:orange", label="zero-overhead ideal (same event)")
    axes.set_ylabel("in-order latency (s)\nread to written")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    _note_decimation(axes, trace.latencies, "events")


def _draw_in_flight(axes, trace) -> None:
    points = trace.in_flight.samples()
    axes.plot(
        [point.at_s for point in points],
        [point.in_flight for point in points],
        drawstyle="steps-post",
        lw=1.0,
        color="tab:green",
    )
    axes.set_ylabel("in flight\n(read, not yet written)")
    axes.set_xlabel("time since the first event was read (s)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    _note_decimation(axes, trace.in_flight, "changes")


def _note_decimation(axes, series: Decimated, what: str) -> None:
    if series.stride > 1:
        axes.text(
            0.99,
            0.02,
            f"{series.seen} {what}: lowest and highest of every {series.stride} shown",
            transform=axes.transAxes,
            ha="right",
            fontsize=8,
            color="gray",
        )
