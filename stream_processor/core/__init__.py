"""The run's pure core: ordering windows, the batch policy, retries, records, pacing and the
run's owner (`StreamProcessor`). It imports no engine, transport or file format of its own."""
