"""A progress bar on a terminal (tqdm): written, received, in flight, lag. Silent elsewhere.

It counts nothing itself: on each line written (at most every REFRESH_S) it redraws from
the run's observations.
"""

from __future__ import annotations

import contextlib
import sys
import time

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from stream_processor.core.observer import Observer

REFRESH_S = 0.2  # redraw the figures at most this often: the bar must not slow the stream


class Progress(Observer):
    def __init__(self, observations, enabled: bool = True) -> None:
        self.observations = observations
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: tqdm | None = None
        self._logging = contextlib.ExitStack()  # while the bar shows: our log lines print above it
        self._last_refresh = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = tqdm(unit="ev", desc="written", file=sys.stderr, smoothing=0.1)
            # Our own log lines print above the bar instead of splitting it.
            self._logging.enter_context(logging_redirect_tqdm())
        return self

    def on_read(self, duration_s: float | None = None, arrival_s: float = 0.0, key: object = None) -> None:
        self._maybe_refresh()

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        self._maybe_refresh()

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is None or (now - self._last_refresh < REFRESH_S and not force):
            return
        self._last_refresh = now
        seen = self.observations
        self._bar.update(seen.written - self._bar.n)
        self._bar.set_postfix(
            received=seen.received, in_flight=seen.received - seen.written, lag=f"{seen.lag_s():.2f}s"
        )

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._maybe_refresh(force=True)  # the last figures, not the last throttled ones
            self._logging.__exit__(*exc_info)
            self._bar.close()
