"""The command line: `stream-processor` and `python -m stream_processor`."""

from stream_processor.cli.main import main

__all__ = ["main"]
