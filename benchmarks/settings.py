"""How big a benchmark run is: the full scale (on demand) and the smoke scale (a minute or two)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.runs import ROOT

DEFAULT_RECORDING = ROOT / "sampled_rc.json"
MEMORY_CHECKPOINT_SHARES = (0.1, 0.25, 0.5, 1.0)  # 10k, 25k, 50k, 100k lines of a 100k stream


@dataclass(frozen=True)
class Settings:
    recording: Path = DEFAULT_RECORDING
    time_scale: float = 1.0  # batch and realtime: the reference task waits `wait * time_scale`
    batch_workers: tuple[int, ...] = (4, 12, 64)
    speed: float = 1.0  # realtime: replay at this many times real time
    stream_workers: int = 12  # realtime, throughput and memory: the project's default
    throughput_events: int = 20_000
    postgres_events: int = 20_000  # postgres: zero-wait events to a file and to a table
    follow_lines: int = 2_000  # follow: lines committed one at a time, at follow_rate a second
    follow_rate: float = 200.0
    memory_events: int = 100_000
    short_time_scale: float = 0.02  # short tasks: about 34 ms an event, where per-task cost decides
    short_workers: tuple[int, ...] = (12, 64, 256)
    short_pools: tuple[str, ...] = ("threads", "prefork")  # the pool that fits a sleeping task first
    high_workers: int = 256  # high concurrency: full scale, file mode
    order_batch_workers: tuple[int, ...] = (12, 64)  # order modes in file mode
    dashboard_events: int = 50_000  # dashboard: zero-wait events per run (file mode: several seconds)
    dashboard_repeats: int = 7  # dashboard: runs with the page open, and as many without it
    server_rate_events: int = 50_000  # zero-wait events replayed to one client, no pacing
    pacing_clients: int = 50
    pacing_events: int = 120  # the recording's first events: about a minute at 1x
    cluster_hosts: int = 3  # cluster: worker hosts (network namespaces), each with
    cluster_concurrency: int = 4  # this many pool processes
    cluster_time_scale: float = 0.4  # a run of the recording lasts about 40 s
    heavy_workers: int = 12  # heavy tail: file mode, the recording's events take `heavy_short_s`,
    heavy_short_s: float = 0.02  # but the one at `heavy_slow_offset` takes `heavy_slow_s`
    heavy_slow_s: float = 12.0
    heavy_slow_offset: int = 200
    smoke: bool = False

    @property
    def memory_checkpoints(self) -> tuple[int, ...]:
        return tuple(round(self.memory_events * share) for share in MEMORY_CHECKPOINT_SHARES)

    def with_overrides(self, **values: Any) -> Settings:
        """These settings with every value that is not None replaced."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})

    def as_json(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["recording"] = str(self.recording)
        figures["memory_checkpoints"] = list(self.memory_checkpoints)
        return figures


FULL = Settings()
# Realtime keeps the full run's load: speed x time scale = 1, so the workers are as busy
# relative to the arrivals as at full scale, only 50 times faster.
SMOKE = Settings(
    time_scale=0.02,
    speed=50.0,
    throughput_events=3_000,
    postgres_events=5_000,
    follow_lines=500,
    memory_events=5_000,
    short_workers=(12,),
    high_workers=64,
    order_batch_workers=(12,),
    dashboard_events=5_000,
    dashboard_repeats=2,
    server_rate_events=5_000,
    pacing_events=20,  # about ten seconds at 1x
    heavy_slow_s=2.0,
    smoke=True,
)
