"""File mode: a recording on disk through the pipeline into ordered results."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stream_processor.ideal import IdealSchedule
from stream_processor.pipeline import RunOptions, pipeline
from stream_processor.progress import Progress
from stream_processor.records import open_recording, read_records
from stream_processor.report import build_report, write_report

log = logging.getLogger(__name__)


def process_file(input_path: Path, options: RunOptions, show_progress: bool = True) -> dict[str, Any]:
    """Run every event of `input_path` through the pipeline; return the run's report."""
    options.check()
    open_recording(input_path).close()  # a missing file fails now, before anything starts
    progress = Progress(show_progress)
    with progress, pipeline(options, on_written=progress.on_written) as run:
        if options.runs_reference_task and options.workers:
            run.stats.ideal = IdealSchedule(options.workers)
        for record in read_records(input_path, start=run.start_offset, validate=options.validator()):
            if record.error:
                log.error("%s:%d: %s", input_path, record.line_number, record.error)
            run.stats.on_read(_duration(record, options))
            progress.on_received()
            run.processor.submit(record)
        run.processor.drain()
    report = build_report(run.stats, options.workers, run.broker_name, input=str(input_path))
    if options.report:
        write_report(options.report, report)
    return report


def _duration(record, options: RunOptions) -> float | None:
    """The reference task's run time for this event (0 for a bad line, never sent)."""
    if not options.runs_reference_task:
        return None
    return 0.0 if record.error else record.event["wait"] * options.time_scale
