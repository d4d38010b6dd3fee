"""Process a live stream of events in parallel on Celery workers; write results in arrival order."""

from stream_processor.core.ordering import KeyedWindow, OrderMode, ReorderBuffer, WindowFull, parse_order
from stream_processor.core.processor import StreamProcessor
from stream_processor.engine.execution import batch_function
from stream_processor.engine.executor import Executor, LocalExecutor
from stream_processor.output.sink import JsonlSink

__all__ = [
    "Executor",
    "JsonlSink",
    "KeyedWindow",
    "LocalExecutor",
    "OrderMode",
    "ReorderBuffer",
    "StreamProcessor",
    "WindowFull",
    "batch_function",
    "parse_order",
]
__version__ = "0.2.0"
