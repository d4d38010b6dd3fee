"""A run on three worker hosts (network namespaces, one machine) survives each fault:
a host's link cut and brought back, a worker or a whole host killed, the broker restarted,
and consumers that stop taking tasks. Output byte-identical, nothing lost or written twice."""

from __future__ import annotations

import os

import pytest

from harness.cluster import Cluster, ClusterSettings
from harness.cluster_faults import run_with_fault
from harness.netns import leftovers, pids_in
from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("netns_ready")]

RECORDING = ROOT / "sampled_rc.json"  # the real-sized recording: 620 edits
RECOVERY_BOUND_S = 30.0


@pytest.fixture(scope="module")
def cluster(netns_ready):
    with Cluster(ClusterSettings(hosts=3, concurrency=4)) as running:
        yield running
    assert leftovers(running.tag) == [], "the cluster's teardown left these behind"


def run_through(cluster: Cluster, fault: str, tmp_path):
    result = run_with_fault(cluster, fault, RECORDING, directory=tmp_path)
    assert result.exit_code == 0, (tmp_path / f"{fault}.log").read_text()[-3000:]
    assert result.lost == 0
    assert result.duplicates_written == 0
    assert result.identical, "the output differs from the input"
    return result


def test_a_clean_run_on_three_hosts_is_byte_identical(cluster, tmp_path):
    result = run_through(cluster, "clean", tmp_path)
    assert result.late_replies_dropped == 0


def test_a_host_cut_off_for_20_s_loses_nothing_and_throughput_is_back_within_30_s(cluster, tmp_path):
    result = run_through(cluster, "link-cut", tmp_path)
    assert result.before_events_per_s
    assert result.recovery_s is not None and result.recovery_s <= RECOVERY_BOUND_S, result


@pytest.mark.parametrize("fault", ["worker-kill", "host-kill"])
def test_a_killed_worker_or_host_loses_nothing(cluster, tmp_path, fault):
    run_through(cluster, fault, tmp_path)


def test_a_broker_restart_loses_nothing_and_repeats_are_dropped_not_written(cluster, tmp_path):
    run_through(cluster, "broker-restart", tmp_path)


def test_consumers_that_stop_taking_tasks_are_reported_and_the_run_goes_on(cluster, tmp_path):
    result = run_through(cluster, "stall", tmp_path)
    said = "\n".join(result.watchdog)
    assert "no result for" in said
    assert "quiet since their last result: host1 (pids" in said  # names the external workers' hosts
    assert "results are coming in again" in said


def test_teardown_after_an_interrupt_leaves_no_namespace_link_or_process(netns_ready):
    cluster = Cluster(ClusterSettings(hosts=1, concurrency=1))
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), cluster:
        for host in cluster.network.hosts.values():
            pids += pids_in(host.namespace)
        assert pids, "the cluster runs nothing?"
        raise KeyboardInterrupt  # as Ctrl-C in the middle of a run
    assert leftovers(cluster.tag) == []
    assert [pid for pid in pids if _alive(pid)] == []
    assert not cluster.directory.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
