"""How one event's run ended: the outcome kinds, as a worker reports them and the core reads them.

An outcome travels as a JSON list `[kind, value, run_s]`; a `StrEnum` member is its kind's
string on the wire, so a reply from any worker compares equal to these members.
"""

from __future__ import annotations

from enum import StrEnum


class OutcomeKind(StrEnum):
    DONE = "done"  # value: the line to write, or None when the result equals the event
    FAILED = "failed"  # the function raised; value says what (it may run again)
    TIMED_OUT = "timed_out"  # it ran past its time limit (not run again: it would again)
    INVALID = "invalid"  # the line or the result cannot be a JSON line; value says why
    SKIPPED = "skipped"  # not run: the same-key event it follows in its batch failed
    LOST = "lost"  # its worker process died while running it: nobody knows which event did it


DONE, FAILED, TIMED_OUT, INVALID, SKIPPED, LOST = OutcomeKind
KINDS = tuple(OutcomeKind)

Outcome = list  # [kind, value, run_s]: a list, as it travels in JSON
