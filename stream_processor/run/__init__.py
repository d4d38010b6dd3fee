"""A run put together: its options, the pipeline that owns what it starts, file mode,
streaming mode, the watchdog and the files it checks before it starts."""
