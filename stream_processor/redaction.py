"""Credentials out of whatever leaves the process: one way to make a URL safe to show.

A URL may carry a secret in two places: a userinfo password (`amqp://user:PASS@host`)
and a query parameter (`...?token=SECRET`, the documented form for event streams and
browsers). `safe_url` replaces both with `***`, and changes nothing else, so the result
still says which server, path and stream it is: it is what logs, error messages, the
report, the checkpoint's identity of a stream, the dashboard and the metrics show.
`redact_text` does the same to free text that may quote a URL (a library's exception
message, a log line), and hides an `Authorization` header's credentials.

Which query parameters count as credentials: a name (case-insensitive, after
%-decoding) in `CREDENTIAL_NAMES`, or ending in `token`, `secret`, `password`,
`passwd`, `apikey`, `_key`, `-key` or `.key` (`access_token`, `X-Amz-Security-Token`,
`client_secret`, `hub.secret`, `api_key`). A userinfo without a colon may itself be a
token (`https://TOKEN@host/`), so it is hidden whole; with one, the user stays.

In free text a URL ends at a space or quote, and a last `.`, `,`, `:` ... is read as the
sentence's, not the URL's (`... stream URL: reason`): a secret in free text that ends in
such a character keeps that one character. URLs this project shows pass `safe_url`
first, which reads them whole.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from urllib.parse import unquote_plus

MASK = "***"

CREDENTIAL_NAMES = frozenset(
    {
        "token",
        "access_token",
        "auth",
        "authorization",
        "key",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "sig",
        "signature",
        "credential",
        "credentials",
        "session",
        "sessionid",
    }
)
CREDENTIAL_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "_key", "-key", ".key")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PORT = re.compile(r"\d*")
# A parameter after `?`, `&`, `;` or `#`: in a URL its value runs to the next separator;
# in free text also to a space, a quote or a bracket, and punctuation that ends it (`...:
# reason`) is the sentence's. So is a URL's in text.
_URL_PARAMETER = re.compile(r"(?<=[?&;#])([^=&;#?]+)=([^&;#]*)")
_TEXT_PARAMETER = re.compile(r"(?<=[?&;#])([^=&;#?\s'\"<>()]+)=((?:[^&;#\s'\"<>()]*[^&;#\s'\"<>().,:!?\]])?)")
_MASKED = re.compile(re.escape(MASK) + r"[.,:;!?)\]]*")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,:;!?)\]]")
# `Authorization: Basic xxx`, `Bearer xxx`: an HTTP credential quoted in a message.
_AUTHORIZATION = re.compile(r"(?i:(authorization)(\s*[:=]\s*))?\b(Bearer|Basic)(\s+)[^\s'\",;]+")


def is_credential_name(name: str) -> bool:
    """Whether a query parameter of this name carries a credential."""
    lowered = unquote_plus(name).strip().lower()
    return lowered in CREDENTIAL_NAMES or lowered.endswith(CREDENTIAL_SUFFIXES)


def safe_url(url: str) -> str:
    """`url` fit to log, report, store or show: a userinfo password and the values of
    credential-like query (and fragment) parameters become `***`; the rest is unchanged."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    rest = url[start:]
    if scheme:
        rest = _without_password(rest)
    return url[:start] + _redact_parameters(rest, _URL_PARAMETER)


def without_credentials(url: str) -> str:
    """`url` with no credentials at all: no userinfo, no credential-like query parameter
    (the others keep their order, joined by `&`), no fragment. What a stream is,
    whichever token reads it: a run's identity for `--resume`."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    rest = url[start:]
    if scheme:
        masked = _without_password(rest)
        rest = masked.partition(f"{MASK}@")[2] if masked != rest else rest
    rest = rest.partition("#")[0]
    path, _, query = rest.partition("?")
    kept = [part for part in re.split(r"[&;]", query) if part and not is_credential_name(part.partition("=")[0])]
    return url[:start] + path + (f"?{'&'.join(kept)}" if kept else "")


def redact_text(text: str) -> str:
    """Free text (an exception's message, a log line) with every URL in it made safe, any
    credential-like `name=value` parameter masked, and `Bearer ...` credentials hidden."""
    text = _URL_IN_TEXT.sub(lambda found: safe_url(found.group()), text)
    text = _redact_parameters(text, _TEXT_PARAMETER)
    return _AUTHORIZATION.sub(_mask_authorization, text)


def _without_password(rest: str) -> str:
    """What follows `scheme://`, its userinfo's secret masked."""
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at < 0:
        # A password with an unencoded / ? or # in it (`redis://:p#ss@host`) ends the
        # authority early as a parser reads it; a user would still not want it shown.
        head = rest[:authority_end]
        colon = head.rfind(":")
        later = rest.rfind("@")
        if colon < 0 or later < 0 or _PORT.fullmatch(head[colon + 1 :]) or head.startswith("["):
            return rest
        at = later
    userinfo, host = rest[:at], rest[at + 1 :]
    user, has_password, _ = userinfo.partition(":")
    return f"{user}:{MASK}@{host}" if has_password and user else f"{MASK}@{host}"


def _redact_parameters(text: str, parameter: re.Pattern) -> str:
    def mask(found: re.Match) -> str:
        name, value = found.groups()
        if not is_credential_name(name) or _MASKED.fullmatch(value):
            return found.group()  # (masked already: the punctuation after it is the text's)
        return f"{name}={MASK}"

    return parameter.sub(mask, text)


def _mask_authorization(found: re.Match) -> str:
    header = f"{found.group(1)}{found.group(2)}" if found.group(1) else ""
    return f"{header}{found.group(3)}{found.group(4)}{MASK}"


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (message and traceback) goes through `redact_text`:
    the last guard for a library that quotes a URL the project did not make safe first."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def redact_tracebacks() -> None:
    """Tracebacks Python prints itself (an exception nobody caught, in the main thread or
    another) go through `redact_text` too: a library's exception may quote a URL."""

    def print_redacted(kind, value, trace, heading: str = "") -> None:
        sys.stderr.write(redact_text(heading + "".join(traceback.format_exception(kind, value, trace))))

    def in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:  # as the default hook: a thread's exit is no error
            name = args.thread.name if args.thread is not None else threading.get_ident()
            print_redacted(args.exc_type, args.exc_value, args.exc_traceback, f"Exception in thread {name}:\n")

    sys.excepthook = print_redacted
    threading.excepthook = in_thread
