"""Which events a subscriber wants: wikis (names or wildcard patterns), types, namespaces, bot.

- `wikis`: a name or a list of names and patterns, each matched against the event's
  `server_name` ("en.wikipedia.org") and its `wiki` ("enwiki"), either one matching.
  Patterns are fnmatch-style and case-sensitive: `*` any run of characters, `?` one,
  `[abc]` one of those; `"*"` alone is every wiki. Names without wildcards are looked
  up in a set, the patterns are compiled into one regular expression.
- `type`: a value or a list ("edit", "new", "log", "categorize", ...);
- `namespace`: a whole number or a list of them;
- `bot`: true or false (or a list of them).

An event passes when every filter given passes; a list passes when any of it does.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

MAX_VALUES = 100  # entries in one filter's list
MAX_PATTERN_CHARS = 200
WILDCARDS = frozenset("*?[")
FILTER_FIELDS = ("wikis", "type", "namespace", "bot")


class FilterError(ValueError):
    """A filter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class WikiMatcher:
    names: frozenset[str]
    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None

    @classmethod
    def of(cls, values: list[str]) -> WikiMatcher:
        patterns = tuple(value for value in values if WILDCARDS & set(value))
        regex = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        return cls(frozenset(value for value in values if value not in patterns), patterns, regex)

    def matches(self, *names: Any) -> bool:
        for name in names:
            if isinstance(name, str) and (name in self.names or (self._regex and self._regex.match(name))):
                return True
        return False

    def summary(self) -> list[str]:
        return sorted(self.names) + list(self.patterns)


@dataclass(frozen=True)
class EventFilter:
    wikis: WikiMatcher | None = None  # None: every wiki
    types: frozenset[str] | None = None
    namespaces: frozenset[int] | None = None
    bot: frozenset[bool] | None = None

    def matches(self, event: dict[str, Any] | None) -> bool:
        if not isinstance(event, dict):
            return self == EVERYTHING  # a line that is not an event passes only an empty filter
        if self.wikis is not None and not self.wikis.matches(event.get("server_name"), event.get("wiki")):
            return False
        if self.types is not None and event.get("type") not in self.types:
            return False
        namespace = event.get("namespace")
        if self.namespaces is not None and (isinstance(namespace, bool) or namespace not in self.namespaces):
            return False
        bot = event.get("bot")
        return self.bot is None or (isinstance(bot, bool) and bot in self.bot)

    def summary(self) -> dict[str, Any]:
        """What the status page shows of it."""
        return {
            "wikis": "*" if self.wikis is None else self.wikis.summary(),
            "type": sorted(self.types) if self.types is not None else None,
            "namespace": sorted(self.namespaces) if self.namespaces is not None else None,
            "bot": sorted(self.bot) if self.bot is not None else None,
        }


EVERYTHING = EventFilter()


def parse_filter(fields: dict[str, Any]) -> EventFilter:
    """An EventFilter from `wikis`, `type`, `namespace` and `bot` (each optional), or FilterError."""
    return EventFilter(
        wikis=_wikis(fields["wikis"]) if "wikis" in fields else None,
        types=_values(fields, "type", str, "a type such as edit") if "type" in fields else None,
        namespaces=_values(fields, "namespace", int, "a whole number") if "namespace" in fields else None,
        bot=_values(fields, "bot", bool, "true or false") if "bot" in fields else None,
    )


def _wikis(value: Any) -> WikiMatcher | None:
    names = _as_list(value)
    if not names or not all(isinstance(name, str) and 0 < len(name) <= MAX_PATTERN_CHARS for name in names):
        raise FilterError(
            "wikis must be a wiki name or pattern such as en.wikipedia.org, *.wikipedia.org or en.*, "
            f"a list of them ({MAX_VALUES} at most, each 1 to {MAX_PATTERN_CHARS} characters), or '*'"
        )
    return None if "*" in names else WikiMatcher.of(names)


def _values(fields: dict[str, Any], name: str, kind: type, what: str) -> frozenset:
    values = _as_list(fields[name])
    # bool is an int in Python; a namespace of `true` is a mistake, not namespace 1.
    if not values or not all(isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in values):
        raise FilterError(f"{name} must be {what}, or a list of them ({MAX_VALUES} at most), not {fields[name]!r:.60}")
    return frozenset(values)


def _as_list(value: Any) -> list:
    values = value if isinstance(value, list) else [value]
    if len(values) > MAX_VALUES:
        raise FilterError(f"at most {MAX_VALUES} values in one filter, not {len(values)}")
    return values
