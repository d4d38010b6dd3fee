"""Process a live stream of events in parallel on Celery workers; write results in arrival order."""

from stream_processor.executor import Executor, LocalExecutor
from stream_processor.ordering import ReorderBuffer, WindowFull
from stream_processor.processor import StreamProcessor
from stream_processor.sink import JsonlSink

__all__ = ["Executor", "JsonlSink", "LocalExecutor", "ReorderBuffer", "StreamProcessor", "WindowFull"]
__version__ = "0.1.0"
