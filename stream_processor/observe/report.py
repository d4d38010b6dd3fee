"""Figures of a run: counts, span, latency percentiles, the summary and the JSON report.

Latencies go into a `LatencyHistogram` (histogram.py, re-exported here), so the memory
a run needs for its figures stays flat however long the stream is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stream_processor.observe.histogram import LatencyHistogram  # re-exported: its old home

_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


def _quantiles(histogram: LatencyHistogram) -> dict[str, float]:
    return {name: round(histogram.quantile(q), 4) for name, q in _QUANTILES}


def build_report(stats, workers: int, broker: str, **extra: Any) -> dict[str, Any]:
    """The run's figures from its observations (`observations.RunObservations`)."""
    span = stats.span_s
    report: dict[str, Any] = {
        "events": stats.written,
        "errors": stats.errors,
        "wall_s": round(stats.wall_s(), 4),
        "span_s": round(span, 4),
        "latency_s": _quantiles(stats.latency),
        "output_write_s": _quantiles(stats.output_write),
        "events_per_s": round(stats.written / span, 3) if span > 0 else None,
        "workers": workers,
        "broker": broker,
        # At-least-once delivery shows here: repeats that arrived and were not written.
        "late_replies_dropped": stats.state.late_replies_dropped if stats.state else 0,
        "duplicates_dropped": stats.state.duplicates_dropped if stats.state else 0,
        "replies": _replies(stats.state),
    }
    if stats.ideal is not None:
        stats.ideal.finish()  # every event is in: the ideal runs to its end
    if stats.ideal is not None and stats.ideal.count:
        ideal_span = stats.ideal.span
        report["ideal_span_s"] = round(ideal_span, 4)
        report["ideal_latency_s"] = _quantiles(stats.ideal_latency)
        # Zero-work events have an ideal of 0: no efficiency to speak of, not "0 %".
        report["efficiency"] = round(ideal_span / span, 4) if span > 0 and ideal_span > 0 else None
    report.update(extra)
    return _without_absurd_figures(report)


def _replies(state) -> dict[str, Any]:
    """How results came back: messages, results per message (a batch's events come back
    as they end, in reports while it runs), and events handed back by an overrunning batch."""
    messages, results = (state.replies, state.results_back) if state else (0, 0)
    return {
        "messages": messages,
        "results": results,
        "results_per_message": round(results / messages, 3) if messages else None,
        "handed_back": state.handed_back if state else 0,
        "asked_again": state.asked_again if state else 0,
    }


def _without_absurd_figures(value: Any) -> Any:
    """A figure that is not a finite number (an infinite ideal, say) cannot be compared
    with anything: it is left out (null), never written as Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_absurd_figures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_absurd_figures(item) for item in value]
    return value


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def summary_text(report: dict[str, Any]) -> str:
    latency = report["latency_s"]
    rate = report["events_per_s"]
    lines = [
        f"events      {report['events']}  ({report['errors']} with errors)",
        f"wall time   {report['wall_s']:.2f} s   span {report['span_s']:.2f} s" + _ideal_text(report),
        f"throughput  {rate:.2f} events/s" if rate else "throughput  -",
        f"latency     p50 {latency['p50']:.3f} s   p99 {latency['p99']:.3f} s   max {latency['max']:.3f} s",
        f"workers     {report['workers']} on {report['broker']}" + _settings_text(report),
    ]
    replies = report.get("replies") or {}
    if replies.get("messages"):
        handed_back = f", {replies['handed_back']} events handed back by batches that overran"
        lines.append(
            f"replies     {replies['results_per_message']:g} results per message"
            + (handed_back if replies.get("handed_back") else "")
            + (f", {replies['asked_again']} sent again after a restart" if replies.get("asked_again") else "")
        )
    if report.get("late_replies_dropped") or report.get("duplicates_dropped"):
        lines.append(
            f"repeats     {report['late_replies_dropped']} late replies and "
            f"{report['duplicates_dropped']} duplicate completions dropped (not written)"
        )
    if report.get("canaries_dropped"):
        lines.append(f"canaries    {report['canaries_dropped']} EventStreams canary events dropped (not processed)")
    return "\n".join(lines)


def _settings_text(report: dict[str, Any]) -> str:
    parts = [f"order {report['order']}"] if "order" in report else []
    batching = report.get("batching")
    if batching:
        mean = batching.get("mean_event_run_ms")
        measured = f", {mean:g} ms per event measured" if mean is not None else ""
        parts.append(f"batches of up to {batching['batch_max']}{measured}")
    return "   (" + "; ".join(parts) + ")" if parts else ""


def _ideal_text(report: dict[str, Any]) -> str:
    if report.get("ideal_span_s") is None:
        return ""
    efficiency = report.get("efficiency")
    share = f", efficiency {efficiency:.1%}" if efficiency is not None else ""
    return f"   (zero-overhead ideal {report['ideal_span_s']:.2f} s{share})"
