"""A progress bar on a terminal (tqdm): written, received, in flight, lag. Silent elsewhere."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, enabled: bool = True, total: int | None = None) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: tqdm | None = None
        self._total = total
        self.received = 0
        self._last_refresh = 0.0
        self._lag_s = 0.0
        self._in_flight = 0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = tqdm(total=self._total, unit="ev", desc="written", file=sys.stderr, smoothing=0.1)
        return self

    def on_received(self, in_flight: int) -> None:
        self.received += 1
        self._in_flight = in_flight + 1
        self._maybe_refresh()

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._lag_s = latency_s
            self._in_flight = max(0, self._in_flight - 1)
            self._maybe_refresh()

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if self._bar is None or now - self._last_refresh < 0.2:
            return
        self._last_refresh = now
        self._bar.set_postfix(received=self.received, in_flight=self._in_flight, lag=f"{self._lag_s:.2f}s")

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.close()
