"""`python -m stream_processor.engine.isolated`: one event, run in a process of its own.

A worker that runs many events in one process (threads, gevent) sends here an event that
may have killed a worker before (see tasks.run_isolated): reads {"task", "line",
"timeout_s", "call_kwargs"} as JSON on stdin, writes the event's outcome (execution.py)
as JSON on stdout. The function runs in this process's main thread, so its time limit
is the usual signal; if it ends the process, only this one dies.
"""

from __future__ import annotations

import json
import os
import sys

from stream_processor.engine.execution import load_function, run_events


def main() -> int:
    request = json.load(sys.stdin)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # what the function prints is not the outcome
    function = load_function(request["task"])
    [outcome] = run_events(function, [request["line"]], request.get("timeout_s"), request.get("call_kwargs") or {})
    out.write(json.dumps(outcome))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
