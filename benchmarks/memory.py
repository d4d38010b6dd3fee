"""The client's resident memory as a stream goes through it, read from /proc.

Only the run's main process is sampled (the client, which holds the window, the reorder
buffer and the figures), not its workers or replay server: they are other processes.
Progress is the output's line count, so each sample says how far the stream had got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_KB_PER_MB = 1024


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at most, so far) of `pid`, in kB; {} once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    figures = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0])
    return figures


class LineCounter:
    """Lines in a file that only grows, counting only the bytes added since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._position = 0

    def update(self) -> int:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._position)
                while chunk := stream.read(1 << 20):
                    self.lines += chunk.count(b"\n")
                    self._position += len(chunk)
        except FileNotFoundError:
            pass  # the run has not opened its output yet
        return self.lines


@dataclass
class RssSampler:
    """Called with the run's pid while it runs; remembers (lines written, RSS) samples."""

    output: Path
    checkpoints: tuple[int, ...]
    samples: list[tuple[int, int]] = field(default_factory=list)  # (lines, VmRSS kB)
    peak_kb: int = 0

    def __post_init__(self) -> None:
        self._lines = LineCounter(self.output)

    def __call__(self, pid: int) -> None:
        status = read_status_kb(pid)
        if "VmRSS" not in status:
            return
        self.samples.append((self._lines.update(), status["VmRSS"]))
        self.peak_kb = max(self.peak_kb, status.get("VmHWM", 0), status["VmRSS"])

    def figures(self) -> dict[str, Any]:
        """RSS at each checkpoint reached (the first sample at or past it), the peak, the growth."""
        reached = [point for checkpoint in self.checkpoints if (point := self._at(checkpoint)) is not None]
        growth = round(reached[-1]["rss_mb"] / reached[0]["rss_mb"] - 1, 4) if len(reached) > 1 else None
        return {
            "checkpoints": reached,
            "peak_rss_mb": round(self.peak_kb / _KB_PER_MB, 1),
            "growth": growth,
            "samples": len(self.samples),
        }

    def _at(self, checkpoint: int) -> dict[str, Any] | None:
        for lines, rss_kb in self.samples:
            if lines >= checkpoint:
                return {"checkpoint": checkpoint, "lines": lines, "rss_mb": round(rss_kb / _KB_PER_MB, 1)}
        return None
