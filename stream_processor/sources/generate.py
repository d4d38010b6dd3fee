"""Synthetic recordings in the RCStream `change` format of en.wikipedia.org.

Edits arrive as a Poisson process at `rate` per second; each carries `wait`, the
seconds the reference task spends on it: lognormvariate(log 1, 1) clamped to [0.01, 10].
Titles and comments include non-ASCII text, written as \\uXXXX escapes like the real feed.

`--format eventstreams` writes the same edits as Wikimedia's EventStreams serves them:
`$schema` and `meta` first (`meta.topic` and `offset` where this project's server serves
them from, so it sends each line as it is), and every `canary_every` edits a canary event
(`meta.domain` is `canary`) as EventStreams' monitoring sends, which clients must drop.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

START_TIMESTAMP = 1_480_000_000  # late 2016, while RCStream still ran
FORMATS = ("rcstream", "eventstreams")
DEFAULT_CANARY_EVERY = 100
SCHEMA = "/mediawiki/recentchange/1.0.0"
STREAM = "mediawiki.recentchange"
TOPIC = "eqiad.mediawiki.recentchange"  # where the replay server serves it (protocol/event_stream.py)
WORDS = [
    "river",
    "history",
    "album",
    "station",
    "battle",
    "county",
    "village",
    "school",
    "football",
    "season",
    "list",
    "church",
    "film",
    "election",
    "species",
    "railway",
    "district",
    "museum",
    "island",
    "bridge",
    "river",
]
NON_ASCII_WORDS = ["Zürich", "São Paulo", "Łódź", "Kraków", "東京", "Ελλάδα", "Москва", "Café"]
COMMENTS = [
    "/* History */ fix typo",
    "copyedit",
    "Reverted edits by {user} to last version",
    "added citation",
    "[[WP:AWB|AWB]] cleanup",
    "Undid revision {rev} by {user}",
    "/* References */ update",
    "",
]


def generate_events(minutes: float, rate: float, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    duration_s = minutes * 60
    clock = 0.0
    event_id = 900_000_000
    revision = 750_000_000
    while True:
        clock += rng.expovariate(rate)
        if clock >= duration_s:
            return
        event_id += rng.randint(1, 40)
        revision += rng.randint(1, 60)
        yield _change(rng, event_id, revision, START_TIMESTAMP + int(clock))


def _change(rng: random.Random, event_id: int, revision: int, timestamp: int) -> dict[str, Any]:
    is_new = rng.random() < 0.08
    user = _user(rng)
    old_length = 0 if is_new else rng.randint(200, 120_000)
    event: dict[str, Any] = {
        "id": event_id,
        "type": "new" if is_new else "edit",
        "namespace": rng.choices([0, 1, 2, 3, 4, 10, 14], weights=[70, 8, 8, 6, 3, 3, 2])[0],
        "title": _title(rng),
        "comment": rng.choice(COMMENTS).format(user=_user(rng), rev=revision - rng.randint(1, 500)),
        "timestamp": timestamp,
        "user": user,
        "bot": user.lower().endswith("bot"),
        "minor": (not is_new) and rng.random() < 0.3,
        "length": {"old": None if is_new else old_length, "new": max(0, old_length + rng.randint(-500, 2000))},
        "revision": {"old": None if is_new else revision - rng.randint(1, 10_000), "new": revision},
        "server_url": "https://en.wikipedia.org",
        "server_name": "en.wikipedia.org",
        "server_script_path": "/w",
        "wiki": "enwiki",
        "wait": _wait(rng),
    }
    if is_new:
        event["patrolled"] = rng.random() < 0.4
    return event


def _wait(rng: random.Random) -> float:
    return round(min(10.0, max(0.01, rng.lognormvariate(math.log(1), 1))), 6)


def _title(rng: random.Random) -> str:
    words = [rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words) + 1), rng.choice(NON_ASCII_WORDS))
    return " ".join(words)


def _user(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))  # an anonymous editor
    if roll < 0.3:
        return rng.choice(["Cydebot", "ClueBot NG", "InternetArchiveBot", "AnomieBOT"])
    return f"{rng.choice(WORDS).capitalize()}{rng.choice(WORDS).capitalize()}{rng.randint(1, 999)}"


def eventstreams_events(
    minutes: float, rate: float, seed: int, canary_every: int = DEFAULT_CANARY_EVERY
) -> Iterator[dict[str, Any]]:
    """The edits of `generate_events` as EventStreams serves them, with a canary after every
    `canary_every` edits (0: none); `meta.offset` is each line's offset, canaries counted."""
    ids = random.Random(f"meta-{seed}")  # apart from the edits' own: their values stay the same
    offset = 0
    for number, change in enumerate(generate_events(minutes, rate, seed), start=1):
        yield _with_meta(change, ids, offset, change["server_name"])
        offset += 1
        if canary_every and number % canary_every == 0:
            yield _with_meta(_canary(change), ids, offset, "canary")
            offset += 1


def _with_meta(change: dict[str, Any], ids: random.Random, offset: int, domain: str) -> dict[str, Any]:
    title = str(change["title"]).replace(" ", "_")
    meta = {
        "uri": f"https://{domain}/wiki/{title}",
        "request_id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
        "id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
        "dt": datetime.fromtimestamp(change["timestamp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "domain": domain,
        "stream": STREAM,
        "topic": TOPIC,
        "partition": 0,
        "offset": offset,
    }
    return {"$schema": SCHEMA, "meta": meta, **change}


def _canary(after: dict[str, Any]) -> dict[str, Any]:
    """A canary as Wikimedia's monitoring sends one: the same schema, at the time of the edit before it."""
    return {
        "id": after["id"],
        "type": "edit",
        "namespace": 0,
        "title": "Canary",
        "comment": "canary event",
        "timestamp": after["timestamp"],
        "user": "canary",
        "bot": False,
        "minor": False,
        "server_url": "https://canary",
        "server_name": "canary",
        "server_script_path": "/w",
        "wiki": "canary",
        "wait": 0.01,
    }


def write_recording(
    stream: IO[str],
    minutes: float,
    rate: float,
    seed: int,
    format: str = "rcstream",
    canary_every: int = DEFAULT_CANARY_EVERY,
) -> int:
    events = generate_events(minutes, rate, seed)
    if format == "eventstreams":
        events = eventstreams_events(minutes, rate, seed, canary_every)
    count = 0
    for event in events:
        stream.write(json.dumps(event) + "\n")
        count += 1
    return count


def generate_file(
    path: str | Path,
    minutes: float = 5,
    rate: float = 2.07,
    seed: int = 1,
    format: str = "rcstream",
    canary_every: int = DEFAULT_CANARY_EVERY,
) -> int:
    with open(path, "w", encoding="ascii") as stream:
        return write_recording(stream, minutes, rate, seed, format, canary_every)
