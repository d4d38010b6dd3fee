"""File mode: a recording on disk through the pipeline into ordered results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_processor.pipeline import RunOptions, pipeline
from stream_processor.progress import Progress
from stream_processor.records import open_recording, read_records


def process_file(input_path: Path, options: RunOptions, show_progress: bool = True) -> dict[str, Any]:
    """Run every event of `input_path` through the pipeline; return the run's report."""
    options.check()
    open_recording(input_path).close()  # a missing file fails now, before anything starts
    progress = Progress(show_progress)
    with progress, pipeline(options, on_written=progress.on_written) as run:
        for record in read_records(input_path, start=run.start_offset, validate=options.validator()):
            progress.on_received()
            run.take(record, source=str(input_path))
        run.processor.drain()
    return run.report(input=str(input_path))  # after teardown: wall_s covers the whole command
