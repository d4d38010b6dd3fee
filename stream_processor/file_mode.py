"""File mode: a recording on disk through the pipeline into ordered results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_processor.pipeline import RunOptions, blank_lines_of, dashboard, observe, pipeline
from stream_processor.records import read_records, recording_identity


def process_file(input_path: Path, options: RunOptions, show_progress: bool = True) -> dict[str, Any]:
    """Run every event of `input_path` through the pipeline; return the run's report."""
    options.input_path = input_path
    options.check()
    source = recording_identity(input_path)  # also fails now, before anything starts, if unreadable
    observations = observe(options)
    with dashboard(options, observations):
        mode = {"mode": "file", "input": str(input_path)}
        with pipeline(options, source, observations, show_progress=show_progress, mode=mode) as run:
            for record in read_records(input_path, start=run.start_offset, validate=options.validator()):
                run.take(record, source=str(input_path))
            run.processor.drain()
        return run.report(input=str(input_path), **blank_lines_of(input_path))  # after teardown: wall_s covers it all
