"""Starting and stopping the replay server, in each async mode: the `serving URL` line,
and SIGTERM or SIGINT stop it promptly even while clients are connected mid-replay."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT, cli_env, in_each_async_mode, paced_recording, processes_with_marker, wait_until
from tests.listener import Listener

pytestmark = in_each_async_mode
STOP_BOUND_S = 5.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_busy_server_promptly_and_cleanly(tmp_path, signum):
    paced_recording(tmp_path / "rec.json", count=50)
    marker = uuid.uuid4().hex
    command = [sys.executable, str(ROOT / "socket_server.py"), "--input", str(tmp_path / "rec.json"), "--port", "0"]
    server = subprocess.Popen([*command, "--loop"], env=cli_env(marker), stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:") and line.rstrip().endswith("/rc"), line
        url = line.split()[1].removesuffix("/rc")
        with Listener(url) as paced, Listener(url) as unpaced:
            paced.emit("subscribe", {"wikis": "*", "realtime": True, "speed": 0.01})  # waits minutes between events
            unpaced.emit("subscribe", "*")  # loops forever, as fast as it is read
            assert paced.next()[0] == "change" and unpaced.next()[0] == "change"
            started = time.monotonic()
            server.send_signal(signum)
            server.wait(timeout=STOP_BOUND_S * 4)
            stopped_after = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
    assert server.returncode == 0
    assert stopped_after < STOP_BOUND_S, f"took {stopped_after:.1f} s to stop"
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
