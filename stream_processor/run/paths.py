"""The files a run reads and writes, checked before anything starts.

No file may be two of them at once (the output truncating its own input, through a
symlink or a hard link too), every file written must be a regular file in a directory
that exists and can be written, and each problem is one sentence naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from stream_processor.output.sink import checkpoint_path


class PathError(ValueError):
    """A path the user gave cannot work: a usage error (exit 2)."""


def check_run_paths(
    output: Path | object, input_path: Path | None = None, report: Path | None = None, plot: Path | None = None
) -> None:
    """Raise PathError if the run's files collide or an output cannot be written (a database
    output is no file: its table is checked when the run opens it)."""
    roles: list[tuple[str, Path]] = []
    if isinstance(output, Path):
        roles += [("--output", output), ("its checkpoint", checkpoint_path(output))]
    if input_path is not None:
        roles.insert(0, ("--input", input_path))
    roles += [(flag, path) for flag, path in (("--report", report), ("--plot", plot)) if path is not None]
    _refuse_collisions(roles)
    for flag, path in roles:
        if flag != "--input":
            check_writable(path, flag)


def _refuse_collisions(roles: list[tuple[str, Path]]) -> None:
    seen: dict[object, tuple[str, Path]] = {}
    for flag, path in roles:
        identity = file_identity(path)
        if identity in seen:
            other_flag, other = seen[identity]
            raise PathError(f"{flag} {path} is the same file as {other_flag} {other}; give each its own path")
        seen[identity] = (flag, path)


def file_identity(path: Path) -> object:
    """What makes two paths the same file: device and inode if it exists, else where it would be."""
    try:
        status = path.stat()
        return ("inode", status.st_dev, status.st_ino)
    except FileNotFoundError:
        return ("path", os.path.realpath(path))
    except OSError:
        return ("path", os.path.realpath(path))


def check_writable(path: Path, flag: str) -> None:
    """A regular file (or none yet) in an existing, writable directory."""
    if path.exists() and not path.is_file():
        raise PathError(f"{flag} {path} is not a regular file; results go to a file")
    directory = path.resolve().parent
    if not directory.is_dir():
        raise PathError(f"{flag} {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {path}: cannot write in {directory} (read-only or no permission)")
    if path.exists() and not os.access(path, os.W_OK):
        raise PathError(f"{flag} {path}: the file cannot be written (read-only or no permission)")
