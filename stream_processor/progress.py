"""A progress bar on a terminal (tqdm): written, received, in flight, lag. Silent elsewhere."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

REFRESH_S = 0.2  # redraw the figures at most this often: the bar must not slow the stream


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: tqdm | None = None
        self.received = 0
        self.written = 0
        self._lag_s = 0.0
        self._last_refresh = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = tqdm(unit="ev", desc="written", file=sys.stderr, smoothing=0.1)
        return self

    def on_received(self) -> None:
        self.received += 1
        self._maybe_refresh()

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        self.written += 1
        self._lag_s = latency_s
        if self._bar is not None:
            self._bar.update(1)
        self._maybe_refresh()

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is None or (now - self._last_refresh < REFRESH_S and not force):
            return
        self._last_refresh = now
        in_flight = self.received - self.written
        self._bar.set_postfix(received=self.received, in_flight=in_flight, lag=f"{self._lag_s:.2f}s")

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._maybe_refresh(force=True)  # the last figures, not the last throttled ones
            self._bar.close()
