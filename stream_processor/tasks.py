"""The reference task and the Celery app at their public, stable paths.

`--task stream_processor.tasks:wait_and_return` (the default, named in checkpoints) and
`celery -A stream_processor.tasks worker` keep working; the code is in `stream_processor.engine.tasks`.
"""

from stream_processor.engine.tasks import app, wait_and_return

__all__ = ["app", "wait_and_return"]
