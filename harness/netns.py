"""Hosts on one machine: network namespaces joined by veth pairs to a bridge of their own.

`Network` owns what it makes (a bridge `sp-<tag>-br`, one namespace `sp-<tag>-<host>`
per host, a veth pair per host) and `teardown()` removes all of it: every process that
runs in one of its namespaces is killed first (epmd, started by RabbitMQ, daemonizes
and escapes any process group; only `ip netns pids` still finds it). Names carry a
per-network tag, so two networks on one machine never meet. Needs root and `ip`.

The bridge has no address on this machine: hosts reach each other, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass

log = logging.getLogger(__name__)

PREFIX = "sp-"  # every namespace and link this module makes starts with it


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces for us (not root, or no `ip netns`)."""


def why_unavailable() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "`ip` (iproute2) or `unshare` (util-linux) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the veth end on the bridge, in the root namespace: down = the host is cut off

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Network:
    """A bridge and the hosts on it, owned: `teardown()` leaves nothing behind."""

    def __init__(self, tag: str | None = None, subnet: int | None = None) -> None:
        self.tag = tag or uuid.uuid4().hex[:6]
        # Each network has its own bridge and namespaces, so subnets never clash; a
        # per-tag one still keeps addresses told apart in logs.
        self.subnet = subnet if subnet is not None else int(self.tag, 16) % 200 + 20
        self.bridge = f"{PREFIX}{self.tag}-br"
        self.hosts: dict[str, Host] = {}
        self._made_bridge = False

    def up(self) -> Network:
        ip("link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, number: int) -> Host:
        """A namespace `sp-<tag>-<name>` at 10.213.<subnet>.<number> on the bridge."""
        host = Host(
            name, f"{PREFIX}{self.tag}-{name}", f"10.213.{self.subnet}.{number}", f"{PREFIX}{self.tag}-v{number}"
        )
        self.hosts[name] = host  # before making it: teardown removes half-made hosts too
        ip("netns", "add", host.namespace)
        ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        ip("link", "set", host.link, "master", self.bridge, "up")
        inside = ["-n", host.namespace]
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        return host

    def cut(self, host: Host) -> None:
        ip("link", "set", host.link, "down")

    def reconnect(self, host: Host) -> None:
        ip("link", "set", host.link, "up")

    def kill_processes(self, host: Host, signum: int = signal.SIGKILL) -> list[int]:
        """Signal every process in the host's namespace (the host "loses power")."""
        pids = pids_in(host.namespace)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def teardown(self) -> None:
        """Kill every process in our namespaces, then remove them and our links. Safe to repeat."""
        for host in self.hosts.values():
            _empty_namespace(host.namespace)
        for host in self.hosts.values():
            ip("netns", "del", host.namespace, check=False)
            ip("link", "del", host.link, check=False)  # gone with its peer's namespace, normally
        if self._made_bridge:
            ip("link", "del", self.bridge, check=False)
        self.hosts.clear()
        self._made_bridge = False
        left = leftovers(self.tag)
        if left:
            log.warning("left after teardown of network %s: %s", self.tag, ", ".join(left))


def pids_in(namespace: str) -> list[int]:
    result = ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []


def _empty_namespace(namespace: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in it until none is left (a dying parent may fork one more)."""
    deadline = time.monotonic() + timeout_s
    while (pids := pids_in(namespace)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_leftovers() -> list[str]:
    """Remove every namespace and link of ours that a killed owner (SIGKILL: no teardown)
    left, with the processes in them. Returns what it removed."""
    found = leftovers()
    for item in found:
        kind, name = item.split(" ", 1)
        if kind == "netns":
            _empty_namespace(name)
            ip("netns", "del", name, check=False)
        else:
            ip("link", "del", name, check=False)
    return found


def leftovers(tag: str = "") -> list[str]:
    """Namespaces and links of ours (of one network's tag, or of any) that still exist."""
    prefix = f"{PREFIX}{tag}-" if tag else PREFIX
    namespaces = [line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", check=False).stdout.splitlines()]
    return [f"netns {name}" for name in namespaces if name.startswith(prefix)] + [
        f"link {name}" for name in links if name.startswith(prefix)
    ]
