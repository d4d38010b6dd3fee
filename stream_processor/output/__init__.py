"""The run's results: the only writer (sink and checkpoint) and the checker (`verify`)."""
