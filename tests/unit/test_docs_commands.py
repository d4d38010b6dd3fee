"""Every command the README and the docs site show is checked against the real thing,
without running it.

- `stream-processor ...`, `python -m stream_processor ...` and the wrapper scripts
  (`run.py`, `run_streaming.py`, `socket_server.py`, `socket_client.py`) are parsed by the
  CLI's own argparse parser, found as the docs' CLI reference finds it
  (docs/hooks/cli_reference.py);
- `make TARGET [VAR=value]` must name a Makefile target and variable;
- `python -m benchmarks`, `benchmarks.pools` and `harness.cluster_faults` are parsed by
  their own parsers; `celery -A MODULE` must import and hold a Celery app;
- input files must exist, or be written by an earlier command on the same page;
- files of the repository named in backticks must exist, and every `STREAM_PROCESSOR_*`
  variable named must be one the code reads;
- the site builds with `mkdocs build --strict`.

Commands come from `sh`, `bash`, `shell` and `console` code blocks, a systemd unit's
`ExecStart=`, and inline code that starts like a command of this project. Usage synopses
belong in `text` blocks: they are not commands.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery
from celery.concurrency import get_available_pool_names

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_BLOCKS = {"sh", "bash", "shell", "console"}
WRAPPERS = ("run.py", "run_streaming.py", "socket_server.py", "socket_client.py")
# Files named in the docs that belong to other projects, not this repository.
EXTERNAL_FILES = {"base_server.py", "async_server.py", "celery/concurrency/asynpool.py"}
# Tools the docs may show that are not this project's: checked lightly, or not at all.
OTHER_TOOLS = {"curl", "npm", "node", "cmp", "ip", "rabbitmq-server", "systemctl", "apt-get", "kill"}
# Modules whose `main(argv)` builds its own parser inline: parsed by stopping right after parse_args.
MAIN_PARSERS = {"benchmarks.pools", "harness.cluster_faults"}
SUBCOMMAND_SPAN = re.compile(r"^(process|run|consume|serve|worker|verify|generate) -")


# --- Collecting the commands -------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str
    inline: bool = False

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(markdown: str) -> Iterator[tuple[str, int, list[str]]]:
    """Fenced code blocks: (info, first line number, lines)."""
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[index])
        if not opening:
            index += 1
            continue
        fence, info, start = opening.group(1), opening.group(2).lower(), index + 1
        index += 1
        body = []
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index])
            index += 1
        index += 1
        yield info, start + 1, body


def _prose(markdown: str) -> str:
    """The page without its fenced blocks (kept as blank lines, so line numbers hold)."""
    lines = markdown.splitlines()
    for _, start, body in _blocks(markdown):
        for offset in range(-1, len(body) + 1):
            if 0 <= start - 1 + offset < len(lines):
                lines[start - 1 + offset] = ""
    return "\n".join(lines)


def _block_commands(page: Path, info: str, start: int, body: list[str]) -> Iterator[Command]:
    pending, first = "", start
    for number, raw in enumerate(body, start):
        line = raw.strip()
        if info == "console":
            if not pending and not line.startswith("$ "):
                continue  # output, not a command
            line = line.removeprefix("$ ")
        if not pending:
            first = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            yield Command(page, first, text)


def _looks_like_a_command(span: str) -> bool:
    starts = ("stream-processor ", "python -m ", "python run", "python socket_", "make ")
    return span.startswith(starts) or bool(SUBCOMMAND_SPAN.match(span))


def _is_synopsis(span: str) -> bool:
    """`verify INPUT OUTPUT [--order MODE]` describes a command; it is not one."""
    return any(mark in span for mark in ("[", "...", "…")) or any(
        re.fullmatch(r"[A-Z][A-Z_]*", token) for token in span.split()
    )


def commands_in(page: Path, markdown: str) -> list[Command]:
    found = []
    for info, start, body in _blocks(markdown):
        if info in SHELL_BLOCKS:
            found += _block_commands(page, info, start, body)
        elif info == "ini":
            for number, line in enumerate(body, start):
                if line.startswith("ExecStart="):
                    found.append(Command(page, number, line.removeprefix("ExecStart=")))
    for number, line in enumerate(_prose(markdown).splitlines(), 1):
        for span in re.findall(r"`([^`\n]+)`", line):
            span = span.strip()
            if _looks_like_a_command(span) and not _is_synopsis(span):
                if SUBCOMMAND_SPAN.match(span):
                    span = "stream-processor " + span
                found.append(Command(page, number, span, inline=True))
    return found


def all_commands() -> list[Command]:
    return [command for page in PAGES for command in commands_in(page, page.read_text(encoding="utf-8"))]


# --- The real things to check against ----------------------------------------------------


@functools.cache
def _hook():
    spec = importlib.util.spec_from_file_location("docs_cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def cli_parser() -> argparse.ArgumentParser:
    return _hook().build_parser()


@functools.cache
def wrapper_subcommands() -> dict[str, str]:
    """Which sub-command each wrapper script runs, read from the script itself."""
    found = {}
    for name in WRAPPERS:
        match = re.search(r"main\(\[\s*[\"'](\w+)[\"']\s*,\s*\*sys\.argv\[1:\]\s*\]\)", (ROOT / name).read_text())
        assert match, f"{name}: cannot tell which sub-command it runs"
        found[name] = match.group(1)
    return found


@functools.cache
def makefile() -> tuple[set[str], set[str]]:
    """The Makefile's targets and variables."""
    text = (ROOT / "Makefile").read_text()
    targets = {
        name
        for line in text.splitlines()
        if (match := re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line))
        for name in [match.group(1)]
        if not name.startswith(".")
    }
    variables = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[?:+]?=", text, re.MULTILINE))
    return targets, variables


@functools.cache
def known_environment_variables() -> str:
    """The text every STREAM_PROCESSOR_* variable a doc names must appear in."""
    sources = [ROOT / "Makefile", ROOT / ".ci" / "run"]
    for directory in ("stream_processor", "tests", "harness", "benchmarks"):
        sources += (ROOT / directory).rglob("*.py")
    this_test = Path(__file__).resolve()  # it names a variable nobody reads, on purpose
    return "\n".join(path.read_text(encoding="utf-8") for path in sources if path.is_file() and path != this_test)


@functools.cache
def repository_files() -> tuple[set[str], set[str]]:
    """Every file and directory of the working tree (as paths relative to the root)."""
    files, directories = set(), set()
    skip = {".git", ".venv", "site", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache", ".hypothesis"}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [name for name in dirnames if name not in skip and not name.endswith(".egg-info")]
        relative = Path(dirpath).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        directories.update(prefix + name + "/" for name in dirnames)
        files.update(prefix + name for name in filenames)
    return files, directories


def repository_has(name: str) -> bool:
    """The name is a file or directory here, at the root or as the end of a longer path
    (`serving/core.py` is stream_processor/serving/core.py)."""
    files, directories = repository_files()
    pool = directories if name.endswith("/") else files
    return name in pool or any(path.endswith("/" + name) for path in pool)


# --- Checking one command ------------------------------------------------------------------


class _Parsed(Exception):
    pass


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """A doc spells every flag out: `--time-scal` would pass argparse, as a prefix."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _no_abbreviations(subparser)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse as the program would; a usage error raises ValueError with argparse's message."""
    _no_abbreviations(parser)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return parser.parse_args(args)
    except SystemExit as exc:
        if exc.code in (0, None) and any(arg in ("-h", "--help") for arg in args):
            return argparse.Namespace()
        raise ValueError(err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else str(exc)) from None


def _parse_with_main(module_name: str, args: list[str]) -> None:
    """For a `main(argv)` that builds its parser inline: stop it right after parse_args."""
    module = importlib.import_module(module_name)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        argparse.ArgumentParser.parse_args = original  # the parse itself, and anything after, as usual
        raise _Parsed(_parse(self, args))

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        module.main(args)
    except _Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{module_name}.main returned without parsing its arguments")


def _module_parser(module_name: str) -> Callable[[list[str]], object] | None:
    """How to parse `python -m MODULE ARGS`: the module's (or its .cli's) parser builder."""
    spec = importlib.util.find_spec(module_name)
    names = [module_name, module_name + ".cli"] if spec and spec.submodule_search_locations else [module_name]
    for name in names:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        builder = getattr(module, "build_parser", None)
        if callable(builder):
            return lambda args, builder=builder: _parse(builder(), args)
    return None


class Checker:
    """Checks commands in page order, remembering the files earlier ones write."""

    def __init__(self) -> None:
        self.written: set[str] = set()

    def _file_exists(self, name: str) -> bool:
        return name in self.written or (ROOT / name).exists() or Path(name).is_absolute() and Path(name).exists()

    def _check_input(self, value: object, what: str) -> None:
        if value is not None and not self._file_exists(str(value)):
            raise ValueError(f"{what} {value}: no such file in the repository, and no earlier command writes it")

    def _check_task(self, task: str | None) -> None:
        if not task:
            return
        module_name, sep, function = task.partition(":")
        if not sep or not re.fullmatch(r"[\w.]+", module_name) or not function.isidentifier():
            raise ValueError(f"--task {task}: not package.module:function")
        ours = module_name.startswith("stream_processor")
        if ours and not callable(getattr(importlib.import_module(module_name), function, None)):
            raise ValueError(f"--task {task}: no such function")

    def stream_processor(self, args: list[str]) -> None:
        namespace = _parse(cli_parser(), args)
        command = getattr(namespace, "command", None)
        if command in ("process", "run", "serve"):
            self._check_input(getattr(namespace, "input", None), "--input")
        if command == "verify":
            self._check_input(namespace.input, "verify's input")
        self._check_task(getattr(namespace, "task", None))
        for written in ("output", "report", "plot"):
            if getattr(namespace, written, None) is not None:
                self.written.add(str(getattr(namespace, written)))

    def python(self, args: list[str]) -> None:
        if not args:
            raise ValueError("python with nothing to run")
        if args[0] == "-m":
            return self.python_module(args[1], args[2:])
        script, rest = args[0], args[1:]
        if script in WRAPPERS:
            return self.stream_processor([wrapper_subcommands()[script], *rest])
        if not (ROOT / script).is_file():
            raise ValueError(f"{script}: no such script")

    def python_module(self, module_name: str, args: list[str]) -> None:
        if module_name == "stream_processor" or module_name.startswith("stream_processor.cli"):
            return self.stream_processor(args)
        if module_name == "pytest":
            values_of = {"-k", "-m", "-n", "-p", "-o", "--tb", "--maxfail"}  # flags whose value is no path
            for previous, arg in zip(["", *args], args, strict=False):
                if arg.startswith("-") or previous in values_of:
                    continue
                if not self._file_exists(arg.split("::")[0]):
                    raise ValueError(f"pytest {arg}: no such test path")
            return None
        if module_name == "mkdocs":
            return None
        if importlib.util.find_spec(module_name) is None:
            raise ValueError(f"python -m {module_name}: no such module")
        if module_name in MAIN_PARSERS:
            return _parse_with_main(module_name, args)
        parse = _module_parser(module_name)
        if parse is not None:
            namespace = parse(args)
            self._check_input(getattr(namespace, "recording", None), "--recording")
            return None
        if args:
            raise ValueError(f"python -m {module_name} {' '.join(args)}: no parser to check its arguments against")
        return None

    def make(self, args: list[str]) -> None:
        targets, variables = makefile()
        for arg in args:
            if arg.startswith("-"):
                continue
            if "=" in arg:
                name, _, value = arg.partition("=")
                if name not in variables:
                    raise ValueError(f"make {arg}: the Makefile has no variable {name}")
                if name == "FAULTS":
                    faults = importlib.import_module("harness.cluster_faults")
                    faults.parse_faults(value.split())  # raises ValueError naming an unknown fault
            elif arg not in targets:
                raise ValueError(f"make {arg}: no such target (targets: {', '.join(sorted(targets))})")

    def celery(self, args: list[str]) -> None:
        app_module = None
        for flag, value in zip(args, args[1:], strict=False):
            if flag in ("-A", "--app"):
                app_module = value
            if flag in ("-P", "--pool") and value not in get_available_pool_names():
                raise ValueError(f"celery -P {value}: not one of Celery's pools")
        if app_module is None:
            raise ValueError("celery without -A: which app?")
        module = importlib.import_module(app_module)
        if not any(isinstance(value, Celery) for value in vars(module).values()):
            raise ValueError(f"celery -A {app_module}: the module holds no Celery app")

    def pip(self, args: list[str]) -> None:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for arg in args:
            if match := re.fullmatch(r"\.\[([\w,-]+)\]", arg):
                for extra in match.group(1).split(","):
                    if extra not in extras:
                        raise ValueError(f"pip install {arg}: pyproject.toml has no extra {extra}")

    def cmp(self, args: list[str]) -> None:
        for name in args:
            self._check_input(name, "cmp")

    def check(self, text: str) -> None:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        # One command at a time: a && b, a; b, a | b.
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                if command:
                    self.check_one(command)
                command = []
            else:
                command.append(token)

    def check_one(self, tokens: list[str]) -> None:
        if tokens[0] == "export":  # export NAME=value: only the names to check
            tokens = tokens[1:]
            if not all("=" in token for token in tokens):
                raise ValueError(f"export {' '.join(tokens)}: NAME=value expected")
        while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
            name = tokens.pop(0).partition("=")[0]
            if name.startswith("STREAM_PROCESSOR_") and name not in known_environment_variables():
                raise ValueError(f"{name}: no code reads this variable")
        if not tokens:
            return
        program, args = Path(tokens[0]).name, tokens[1:]
        if program == "stream-processor":
            self.stream_processor(args)
        elif re.fullmatch(r"python(3(\.\d+)?)?", program):
            self.python(args)
        elif program == "make":
            self.make(args)
        elif program == "celery":
            self.celery(args)
        elif program in ("pip", "pip3"):
            self.pip(args)
        elif program == "cmp":
            self.cmp(args)
        elif program not in OTHER_TOOLS:
            raise ValueError(f"{program}: a command this test does not know; teach it, or show it as text")


def check_page(page: Path, markdown: str) -> list[str]:
    """Every problem with the commands of one page, as `file:line: command: why`."""
    checker, problems = Checker(), []
    for command in commands_in(page, markdown):
        try:
            checker.check(command.text)
        except (ValueError, ImportError) as exc:
            problems.append(f"{command.where}: {command.text}: {exc}")
    return problems


# --- What the pages name -------------------------------------------------------------------

PATH_SPAN = re.compile(r"^[\w.-]+(/[\w.-]+)*(\.(py|js|mjs|html|css)|/)$")


def named_files(markdown: str) -> set[str]:
    spans = re.findall(r"`([^`\n]+)`", _prose(markdown))
    return {span for span in spans if PATH_SPAN.match(span) and span not in EXTERNAL_FILES}


def named_variables(markdown: str) -> set[str]:
    return set(re.findall(r"STREAM_PROCESSOR_[A-Z0-9_]*[A-Z0-9]", markdown))


# --- The tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_shown_parses(page):
    assert check_page(page, page.read_text(encoding="utf-8")) == []


def test_the_pages_show_commands_of_every_kind():
    """The collection itself works: a page that loses its code blocks would pass silently."""
    texts = " ".join(command.text for command in all_commands())
    for expected in ("stream-processor verify", "python run.py", "python run_streaming.py", "make test", "celery -A"):
        assert expected in texts, expected
    assert len(all_commands()) > 50


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_files_named_exist(page):
    missing = sorted(name for name in named_files(page.read_text(encoding="utf-8")) if not repository_has(name))
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_environment_variables_named_are_read_by_the_code(page):
    known = known_environment_variables()
    unknown = sorted(name for name in named_variables(page.read_text(encoding="utf-8")) if name not in known)
    assert unknown == []


def test_the_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link.split("#")[0] for link in links if not re.match(r"^[a-z]+:", link)]
    assert local, "the README links to no page of the docs"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_the_cli_reference_is_generated_from_the_parser():
    hook = _hook()
    reference = hook.on_page_markdown(f"# CLI\n\n{hook.PLACEHOLDER}\n", None, None, None)
    assert hook.PLACEHOLDER not in reference
    for name, subparser in hook._subcommands(cli_parser()).items():
        assert f"## {subparser.prog}\n" in reference, name
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # every command has -h; the reference leaves it out
            for option in action.option_strings:
                assert f"`{option}" in reference, (name, option)


def test_the_cli_reference_does_not_show_the_builders_secrets(monkeypatch):
    monkeypatch.setenv("STREAM_PROCESSOR_TOKEN", "do-not-publish-me")
    hook = _hook()
    assert "do-not-publish-me" not in hook.render_reference(hook.build_parser())
    assert os.environ["STREAM_PROCESSOR_TOKEN"] == "do-not-publish-me"  # put back afterwards


BAD_PAGE = """
```sh
stream-processor process --wokers 4
stream-processor process --time-scal 0.1
python run.py --order sideways
python run_streaming.py --input no-such-recording.json
make tset
make cluster FAULTS="link-cut meteor"
export STREAM_PROCESSOR_NO_SUCH_THING=1
celery -A stream_processor.no_such_module worker
python -m benchmarks --only no-such-scenario
frobnicate --now
```

And inline: `stream-processor verify --order sideways a b`, `serve --prot 5000`.
"""

GOOD_PAGE = """
```console
$ stream-processor generate --minutes 1 --output fresh.json
wrote 124 events
$ stream-processor verify fresh.json fresh.json && stream-processor --help
```

`python -m benchmarks --only server --smoke`, `make cluster FAULTS=all`, `consume --url http://x/v2/stream/y`.
"""


def test_the_check_can_fail():
    """A misspelt or shortened flag, a bad value, a missing file, an unknown target, fault,
    variable, module, scenario or tool: each is one problem, on its own line."""
    problems = check_page(ROOT / "docs" / "bad.md", BAD_PAGE)
    assert len(problems) == 12, "\n".join(problems)
    assert "--wokers" in problems[0]
    assert "--time-scal " in problems[1]  # a prefix argparse itself would take
    assert "meteor" in problems[5]


def test_the_check_passes_what_works():
    assert check_page(ROOT / "docs" / "good.md", GOOD_PAGE) == []


def test_a_missing_file_is_seen():
    assert not repository_has("stream_processor/no_such_module.py")
    assert not repository_has("tests/test_failures.py")  # moved into a tier
    assert repository_has("serving/core.py")
    assert named_files("see `stream_processor/gone.py` and `web/`") == {"stream_processor/gone.py", "web/"}


def test_the_site_builds_strictly(tmp_path):
    """`make docs` as CI runs it: any warning (a broken link or anchor) fails."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
