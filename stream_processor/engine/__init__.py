"""Where the work runs: the executor seam, the in-process engine, the Celery app and task,
brokers, worker processes and the process ownership they share."""
