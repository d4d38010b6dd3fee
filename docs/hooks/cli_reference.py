"""MkDocs hook: the CLI reference, generated from the real argparse parser at build time.

`docs/cli.md` holds the placeholder `<!-- cli-reference -->`; `on_page_markdown` puts there
the usage, every flag, its default and its help, for the top-level command and each
sub-command. The parser is found by what it returns, not by its name, so a rename in
`stream_processor.cli.main` does not break the docs (tests/unit/test_docs_commands.py
uses the same lookup to parse every command the docs show).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

PLACEHOLDER = "<!-- cli-reference -->"
CLI_MODULE = "stream_processor.cli.main"
ROOT = Path(__file__).resolve().parents[2]
# Defaults some flags read from the environment: never the builder's own, in the docs.
ENV_PREFIX = "STREAM_PROCESSOR_"


@contextlib.contextmanager
def _clean_environment() -> Iterator[None]:
    """Hide $STREAM_PROCESSOR_* while the parser is built: a token in the builder's
    environment must not become a documented default."""
    saved = {name: value for name, value in os.environ.items() if name.startswith(ENV_PREFIX)}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def _returns_parser(function: Callable) -> bool:
    annotation = inspect.signature(function).return_annotation
    if annotation is argparse.ArgumentParser:
        return True
    # `from __future__ import annotations` leaves the annotation as text.
    return isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] == "ArgumentParser"


def _callable_without_arguments(function: Callable) -> bool:
    return all(
        parameter.default is not inspect.Parameter.empty
        or parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for parameter in inspect.signature(function).parameters.values()
    )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def find_parser_builder() -> Callable[[], argparse.ArgumentParser]:
    """The function of the CLI module that builds its parser: defined there, callable with
    no arguments, annotated to return an `argparse.ArgumentParser` (or, failing that,
    named like a parser builder). With several, the one whose parser has sub-commands."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the working tree's package, even without an install
    module = importlib.import_module(CLI_MODULE)
    functions = [
        value
        for value in vars(module).values()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and _callable_without_arguments(value)
    ]
    candidates = [function for function in functions if _returns_parser(function)]
    if not candidates:  # unannotated: try the ones named for it, by what they return
        candidates = [function for function in functions if "parser" in function.__name__.lower()]
    built = []
    for function in candidates:
        with _clean_environment():
            parser = function()
        if isinstance(parser, argparse.ArgumentParser):
            built.append((bool(_subcommands(parser)), function))
    if not built:
        raise RuntimeError(
            f"no function in {CLI_MODULE} returns an argparse.ArgumentParser when called without arguments: "
            "the CLI reference cannot be generated"
        )
    return max(built, key=lambda item: item[0])[1]


def build_parser() -> argparse.ArgumentParser:
    with _clean_environment():
        return find_parser_builder()()


# --- Markdown ---------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_SPECIAL = re.compile(r"([\\*_\[\]|])")


def _literal(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", text)


def _text(value: str) -> str:
    """Help text as Markdown: its `code spans` kept, everything else literal."""
    parts = _CODE_SPAN.split(" ".join(value.split()))
    return "".join(part if part.startswith("`") else _literal(part) for part in parts)


def _code(value: str) -> str:
    return f"`{value}`".replace("|", "\\|")


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if value is argparse.SUPPRESS:
            del params[name]
        elif hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(choice) for choice in params["choices"])
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _default(action: argparse.Action) -> str:
    value = action.default
    if value is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
        return ""
    if isinstance(action, argparse._StoreTrueAction) and value in (False, None):
        return "off"
    if value is None or value == []:
        return "—"
    if isinstance(value, float):
        return _code(f"{value:g}")
    return _code(str(value))


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return _code(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(_code(option) for option in action.option_strings)
    if action.metavar is not None:
        metavar = action.metavar
    elif action.choices is not None:
        metavar = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        metavar = action.dest.upper()
    return ", ".join(_code(f"{option} {metavar}") for option in action.option_strings)


def _table(actions: list[argparse.Action], prog: str, positional: bool) -> list[str]:
    if positional:
        lines = ["| argument | meaning |", "| --- | --- |"]
        lines += [f"| {_invocation(action)} | {_text(_help(action, prog))} |" for action in actions]
        return lines
    lines = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for action in actions:
        meaning = _text(_help(action, prog))
        if action.choices is not None and action.metavar is not None:
            meaning += f" (one of {', '.join(_code(str(choice)) for choice in action.choices)})"
        if isinstance(action, argparse._AppendAction):
            meaning += " (repeatable)"
        lines.append(f"| {_invocation(action)} | {_default(action)} | {meaning} |")
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    # Wrapped to fit the page's code column; the real one wraps at the terminal's width.
    formatter = argparse.HelpFormatter(parser.prog, width=78)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def render_parser(parser: argparse.ArgumentParser, level: int = 2, summary: str = "") -> list[str]:
    lines = [f"{'#' * level} {parser.prog}", ""]
    if summary:
        lines += [_text(summary[:1].upper() + summary[1:]) + ".", ""]
    lines += ["```text", _usage(parser), "```", ""]
    if parser.description:
        lines += [_text(parser.description), ""]
    actions = [action for action in parser._actions if not isinstance(action, argparse._SubParsersAction)]
    positionals = [action for action in actions if not action.option_strings]
    flags = [action for action in actions if action.option_strings and not isinstance(action, argparse._HelpAction)]
    if positionals:
        lines += _table(positionals, parser.prog, positional=True) + [""]
    if flags:
        lines += _table(flags, parser.prog, positional=False) + [""]
    return lines


def render_reference(parser: argparse.ArgumentParser) -> str:
    lines = render_parser(parser)
    if parser.epilog:
        lines += ["```text", parser.epilog.strip(), "```", ""]
    summaries = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
    for name, subparser in _subcommands(parser).items():
        lines += render_parser(subparser, level=2, summary=summaries.get(name, ""))
    return "\n".join(lines).rstrip() + "\n"


# --- MkDocs events ------------------------------------------------------------------------


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render_reference(build_parser()))
