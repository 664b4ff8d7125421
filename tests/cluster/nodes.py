"""Nodes of a small network made for one test: a bridge, one namespace per node.

Every node is a network namespace with one veth link to a bridge that lives in a hub
namespace of its own, so the test touches no interface, route or address of the host:
only the subnet `SUBNET`, inside namespaces it made. A worker node also gets its own
hostname and pid space (`unshare --uts --pid`), as a container would.

`Network.down()` removes every namespace it made (their links go with them) and kills
what ran in them; the test calls it in a `finally`, and `atexit` and SIGTERM call it
too, so a test stopped half-way leaves nothing behind. Leftovers of an earlier run that
could not clean up (`PREFIX`…) are removed before a new network is made.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

PREFIX = "glc-"
SUBNET = "10.231.7"  # /24, only inside the namespaces below
HUB = f"{PREFIX}hub"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot run the cluster test, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (`.ci/run` runs as root)"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"{PREFIX}probe"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def _ours() -> list[str]:
    listed = run("ip", "netns", "list", check=False).stdout.split()
    return [name for name in listed if name.startswith(PREFIX)]


def pids_in(namespace: str) -> list[int]:
    """Every process whose network namespace is `namespace`."""
    out = run("ip", "netns", "pids", namespace, check=False).stdout
    return [int(p) for p in out.split()]


@dataclass
class Node:
    name: str  # the namespace
    address: str
    link: str = "eth0"

    def exec_args(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def signal(self, signum: int) -> int:
        """Send `signum` to every process of the node; how many there were."""
        pids = pids_in(self.name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return len(pids)

    def cut(self) -> None:
        run("ip", "-n", self.name, "link", "set", self.link, "down")

    def restore(self) -> None:
        run("ip", "-n", self.name, "link", "set", self.link, "up")


@dataclass
class Network:
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _up: bool = False

    def up(self, names: Sequence[str]) -> None:
        _remove_leftovers()
        self._up = True
        atexit.register(self.down)
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: FrameType | None) -> None:
            self.down()
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, on_term)
        run("ip", "netns", "add", HUB)
        run("ip", "-n", HUB, "link", "set", "lo", "up")
        run("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", HUB, "link", "set", "br0", "up")
        for n, name in enumerate(names, start=2):
            node = Node(f"{PREFIX}{name}", f"{SUBNET}.{n}")
            run("ip", "netns", "add", node.name)
            run("ip", "-n", node.name, "link", "set", "lo", "up")
            peer = f"v-{name}"[:15]
            run(
                "ip", "link", "add", node.link, "netns", node.name,
                "type", "veth", "peer", "name", peer, "netns", HUB,
            )  # fmt: skip
            run("ip", "-n", HUB, "link", "set", peer, "master", "br0", "up")
            run("ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", node.link)
            run("ip", "-n", node.name, "link", "set", node.link, "up")
            self.nodes[name] = node

    def down(self) -> None:
        if not self._up:
            return
        self._up = False
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        _remove_leftovers()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


def _remove_leftovers() -> None:
    for name in _ours():
        for pid in pids_in(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        run("ip", "netns", "del", name, check=False)
