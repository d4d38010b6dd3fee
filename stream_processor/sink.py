"""The ordered JSON Lines writer. The output file is its own checkpoint.

Only complete lines count: on resume a torn last line (a crash mid-write) is cut off,
and the number of complete lines is the offset to continue from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from stream_processor.records import count_lines


def resume_point(path: str | Path) -> int:
    """Cut a torn last line off `path` and return how many complete lines it holds."""
    try:
        with open(path, "rb+") as stream:
            stream.truncate(_end_of_last_complete_line(stream))
    except FileNotFoundError:
        return 0
    return count_lines(path)


def _end_of_last_complete_line(stream) -> int:
    size = stream.seek(0, os.SEEK_END)
    position = size
    while position > 0:
        step = min(1 << 16, position)
        stream.seek(position - step)
        chunk = stream.read(step)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return position - step + newline + 1
        position -= step
    return 0


class JsonlSink:
    """Appends lines in order and flushes them, so a reader sees each as soon as it is due."""

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        self.path = Path(path)
        self.start_offset = resume_point(self.path) if resume else 0
        self._stream = open(self.path, "ab" if resume else "wb")  # noqa: SIM115
        self.lines_written = 0

    def write_lines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self._stream.write(line)
            self._stream.write(b"\n")
            self.lines_written += 1
        self._stream.flush()

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
