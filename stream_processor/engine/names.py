"""The names and fixed settings the engine's parts share: environment variables, queues, the
task's name, the broker defaults.

A leaf: it imports nothing, so the options and the command line read these without building
the Celery app (`engine/tasks.py` builds it on import, and re-exports these names).
"""

BROKER_ENV = "STREAM_PROCESSOR_BROKER"
TASK_ENV = "STREAM_PROCESSOR_TASK"
QUEUE_ENV = "STREAM_PROCESSOR_QUEUE"
READY_FILE_ENV = "STREAM_PROCESSOR_READY_FILE"
OWNED_ENV = "STREAM_PROCESSOR_DIE_WITH_PARENT"
VISIBILITY_TIMEOUT_ENV = "STREAM_PROCESSOR_VISIBILITY_TIMEOUT"
BROKER_HEARTBEAT_ENV = "STREAM_PROCESSOR_BROKER_HEARTBEAT"
TASK_EVENTS_ENV = (
    "STREAM_PROCESSOR_TASK_EVENTS"  # "1": Celery's task events on (--task-events), for Flower and exporters
)

DEFAULT_BROKER = "amqp://guest:guest@localhost:5672//"
DEFAULT_TASK = "stream_processor.tasks:wait_and_return"
TASK_NAME = "stream_processor.run_batch"
# A running batch's report (events that ended, events handed back): a state of our own on
# the task's reply queue, where Celery's rpc:// backend publishes progress.
EVENTS_ENDED = "EVENTS_ENDED"
QUEUE = "stream_processor"  # shared by `--workers 0` runs and workers started on their own
RUN_QUEUE_PREFIX = "stream_processor.run."  # a run's private queue, for its own workers
RUN_QUEUE_TTL_S = 3600  # RabbitMQ drops a run's own queue after an hour unused (a crashed run)
DEFAULT_VISIBILITY_TIMEOUT_S = 3600
REDIS_MAX_CONNECTIONS = 2048
# AMQP heartbeat: RabbitMQ closes the connection of a host that vanished (power, network)
# after about two to three of these, and hands its unacked tasks (acks_late) to the others.
# With 5 s, a cut host's tasks run elsewhere within about 10-15 s. 0 turns it off.
DEFAULT_BROKER_HEARTBEAT_S = 5.0
# Publishing waits out a broker restart (about a minute), then the run fails loudly.
PUBLISH_RETRY_POLICY = {"max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 1.0}
