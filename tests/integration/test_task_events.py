"""Celery's own tools see a run with `--task-events`: Flower (PyPI `flower`) lists its
tasks, and a Prometheus exporter of Celery's events (PyPI `celery-prometheus-exporter`)
counts them; a run without the flag sends them nothing. Both tools are real processes,
started and stopped here, reading the event exchange of a RabbitMQ virtual host of this
test's own (other runs on the broker, with task events or not, are not seen here).

(PyPI's `celery-exporter` is OvalMoney's Rust build for Python <= 3.8 and does not install
on 3.11; danihodovic's celery-exporter ships as a container only. The exporter used here
reads the same task events.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.postgres_instance import free_port
from stream_processor.sources.generate import generate_file
from tests.conftest import cli_env, run_script, terminate, wait_until

TASK = "stream_processor.run_batch"


@pytest.fixture
def private_vhost(rabbitmq_url) -> Iterator[str]:
    """The local RabbitMQ's URL on a virtual host made for this test, deleted after it."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.fail("rabbitmqctl is needed to make a private virtual host (it comes with rabbitmq-server)")
    vhost = f"stream-processor-test-{uuid.uuid4().hex[:12]}"

    def ctl(*args: str) -> None:
        subprocess.run([rabbitmqctl, *args], check=True, capture_output=True, timeout=60)

    ctl("add_vhost", vhost)
    try:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{rabbitmq_url.rstrip('/')}/{vhost}"
    finally:
        ctl("delete_vhost", vhost)


def started(command: list[str], marker: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env={**cli_env(marker), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def answering(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def flower_tasks(url: str) -> list[dict]:
    return list(httpx.get(f"{url}/api/tasks", timeout=10).json().values())


def exporter_succeeded(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf'celery_tasks_by_name\{{name="{TASK}",state="SUCCESS"\}} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def test_flower_and_an_exporter_see_the_tasks_of_a_run_with_task_events_and_none_without(private_vhost, tmp_path):
    rabbitmq_url = private_vhost
    quiet, watched = tmp_path / "quiet.json", tmp_path / "watched.json"
    generate_file(quiet, minutes=0.2, seed=1)
    events = generate_file(watched, minutes=0.2, seed=2)
    flower_marker, exporter_marker = uuid.uuid4().hex, uuid.uuid4().hex
    flower_port, exporter_port = free_port(), free_port()
    flower = started(
        [sys.executable, "-m", "celery", "-A", "stream_processor.engine.tasks", "-b", rabbitmq_url, "flower",
         f"--port={flower_port}", "--address=127.0.0.1"],
        flower_marker,
        {"FLOWER_UNAUTHENTICATED_API": "true"},  # its API on, here only (it binds 127.0.0.1)
    )  # fmt: skip
    exporter = started(
        [sys.executable, "-m", "celery_prometheus_exporter", "--broker", rabbitmq_url, "--addr",
         f"127.0.0.1:{exporter_port}"],
        exporter_marker,
        {},
    )  # fmt: skip
    flower_url, exporter_url = f"http://127.0.0.1:{flower_port}", f"http://127.0.0.1:{exporter_port}"
    try:
        wait_until(lambda: answering(f"{flower_url}/api/tasks"), timeout=60, message="Flower to answer")
        wait_until(lambda: answering(f"{exporter_url}/metrics"), timeout=60, message="the exporter to answer")
        common = ["--broker", rabbitmq_url, "--workers", "4", "--time-scale", "0.01", "--batch-max", "1"]
        without = run_script("run.py", ["--input", str(quiet), "--output", str(tmp_path / "q.out"), *common], tmp_path)
        assert without.returncode == 0, without.stderr
        report = tmp_path / "report.json"
        args = ["--input", str(watched), "--output", str(tmp_path / "w.out"), "--report", str(report), *common]
        with_events = run_script("run.py", [*args, "--task-events"], tmp_path)
        assert with_events.returncode == 0, with_events.stderr
        # One task per event (--batch-max 1): each one sent, run and succeeded, as Flower saw it.
        wait_until(
            lambda: sum(task["state"] == "SUCCESS" for task in flower_tasks(flower_url)) >= events,
            timeout=30,
            message=f"Flower to list {events} succeeded tasks",
        )
        wait_until(lambda: exporter_succeeded(exporter_url) >= events, timeout=30, message="the exporter's count")
        tasks, counted = flower_tasks(flower_url), exporter_succeeded(exporter_url)
    finally:
        terminate(flower, flower_marker)  # SIGTERM stops each, and nothing of it is left
        terminate(exporter, exporter_marker)
    assert len(tasks) == events, json.dumps(tasks)[:500]  # the run without the flag sent no event at all
    assert counted == events
    assert {task["name"] for task in tasks} == {TASK}
    assert {task["state"] for task in tasks} == {"SUCCESS"}
    assert len({task["routing_key"] for task in tasks}) == 1  # one run's queue: the watched one's
    assert all(task["sent"] and task["received"] and task["started"] for task in tasks)
    assert all(task["worker"].startswith("stream-processor-") for task in tasks)
