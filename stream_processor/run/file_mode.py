"""File mode: a recording on disk through the pipeline into ordered results.

A run reads the recording as it was when the run started: exactly the bytes its identity
(SHA-256, size, events; the checkpoint's header) describes. Lines a writer appends while
the run goes on are not read: the output is then exactly what the checkpoint says it is
made from, `verify` against those bytes passes, and `--resume` refuses the grown file as
another recording (it is one) instead of mixing the two. A warning at the end says how much
was appended, unread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from stream_processor.core.records import read_records, recording_identity
from stream_processor.run.options import RunOptions
from stream_processor.run.pipeline import blank_lines_of, dashboard, observe, pipeline

log = logging.getLogger(__name__)


def process_file(input_path: Path, options: RunOptions) -> dict[str, Any]:
    """Run every event of `input_path` (as it is now) through the pipeline; return the run's report."""
    options = options.reading(input_path)
    options.check()
    source = recording_identity(input_path)  # also fails now, before anything starts, if unreadable
    size = source["size"]
    observations = observe(options)
    with dashboard(options, observations):
        mode = {"mode": "file", "input": str(input_path)}
        with pipeline(options, source, observations, mode=mode) as run:
            validate = options.engine.validator()
            for record in read_records(input_path, start=run.start_offset, validate=validate, size=size):
                run.take(record, source=str(input_path))
            run.processor.drain()
        _say_if_grown(input_path, source)
        # after teardown: wall_s covers it all
        return run.report(input=str(input_path), **blank_lines_of(input_path, size))


def _say_if_grown(input_path: Path, source: dict[str, Any]) -> None:
    try:
        now = os.stat(input_path).st_size
    except OSError:
        return
    if now != source["size"]:
        log.warning(
            "%s changed during the run (%d bytes, now %d): this run read its first %d bytes (%d events), "
            "as its checkpoint says; what was appended is not in the output (a new run reads it)",
            input_path,
            source["size"],
            now,
            source["size"],
            source["events"],
        )
