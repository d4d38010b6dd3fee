"""Owning child processes (engine/processes.py): the one way a process's log is quoted."""

from stream_processor.engine.processes import log_tail


def test_the_tail_of_a_log_is_its_last_characters(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("started\n" + "x" * 900 + "\nError: the port is taken\n")
    tail = log_tail(log, chars=40)
    assert tail.endswith("Error: the port is taken") and len(tail) <= 40


def test_a_missing_an_empty_or_no_log_each_says_so(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("  \n")
    assert log_tail(empty) == "its log is empty"
    assert log_tail(tmp_path / "missing.log") == "no log"
    assert log_tail(None, when_none="see its log above") == "see its log above"
