"""Benchmarks of stream_processor, each figure beside its zero-overhead ideal.

`python -m benchmarks` runs five scenarios on each broker kind (embedded Redis, RabbitMQ):

- batch: file mode on a recording for several worker counts, span vs the ideal FIFO makespan;
- realtime: streaming mode paced by the events' timestamps, finish and per-event latency
  vs the ideal for events arriving at those times;
- throughput: zero-wait events through the whole pipeline vs the raw Celery floor
  (same broker, same worker concurrency, nothing but send and collect);
- memory: the streaming client's RSS as a long zero-wait stream goes through it;
- dashboard: zero-wait throughput of run.py with its live page open in a headless
  Chromium, beside the same run without it (needs Debian's `chromium`).

and two of the replay server alone, once (no broker), beside their targets:

- server-rate: events/s to one client with no pacing, per async mode, transport and
  client (the official Node clients, and ours);
- server-pacing: the server's pacing error with 50 clients at 1x, per async mode.

The ideals are computed here, on the same recording the run gets, not taken from the run.

    python -m benchmarks --smoke --json bench.json     # a minute or two, both brokers
    python -m benchmarks --json bench.json             # full scale: time scale 1, 100k-event stream
    python -m benchmarks --only batch,realtime --brokers embedded --time-scale 0.1 --speed 10
    python -m benchmarks --only server                 # server-rate and server-pacing

Every process a scenario starts (runs, workers, brokers) is stopped on success, on error
and on Ctrl-C or SIGTERM; its files live in a temporary directory removed at the end.
"""
