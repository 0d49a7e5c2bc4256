"""A Ray cluster of several nodes on this one machine: to try the cluster path, test it and measure it.

Each node is a ``ray start`` with its own temporary folder, so its processes are told apart: :meth:`kill`
ends one node as a crash would (SIGKILL), :meth:`stop` ends every process of this cluster and nothing else
(``ray stop`` would also stop other clusters on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# How soon the head declares a silent node dead: 1 s between checks, 3 missed in a row (Ray's defaults take
# about 15 s). Set on the head; the camera groups of a dead node restart elsewhere once it is declared dead.
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Node:
    """One ``ray start`` of the cluster."""

    name: str
    temp_dir: Path
    resources: dict[str, float] = field(default_factory=dict)
    num_cpus: float = 1


class LocalCluster:
    """A head and worker nodes on this machine; ``address`` is what ``cluster.ray.address`` takes."""

    def __init__(self, root: Path, *, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []
        self.env = {**os.environ, **FAST_FAILURE_DETECTION, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self._ray = str(Path(sys.executable).with_name("ray"))

    def start_head(self, *, num_cpus: float = 1) -> Node:
        """Start the head node (no custom resources: it runs the driver's side, not cameras)."""
        node = Node("head", self.root / "head", num_cpus=num_cpus)
        self._start(node, ["--head", "--port", str(self.port), "--include-dashboard=false",
                           "--ray-client-server-port", str(free_port()), "--node-ip-address", "127.0.0.1"])
        return node

    def add_worker(self, name: str, *, num_cpus: float = 1, resources: dict[str, float] | None = None) -> Node:
        """Start a worker node joining the head."""
        node = Node(name, self.root / name, dict(resources or {}), num_cpus)
        self._start(node, ["--address", self.address, "--node-ip-address", "127.0.0.1"])
        return node

    def node_id(self, node: Node) -> str:
        """The Ray node id of ``node`` (its raylet's)."""
        for pid in self._pids(node):
            for arg in _cmdline(pid):
                if arg.startswith("--node_id="):
                    return arg.split("=", 1)[1]
        raise LookupError(f"node {node.name} has no raylet running")

    def kill(self, node: Node) -> list[int]:
        """SIGKILL every process of ``node`` (its raylet, its workers, its agents), as a crash would."""
        pids = self._pids(node)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        """Kill every process of this cluster (the head's last), and nothing else."""
        for node in sorted(self.nodes, key=lambda n: n.name == "head"):
            self.kill(node)
        for pid in _all_pids():  # the head's client server names the head's address, not its folder
            if any(arg.startswith("--address=") and arg.endswith(f":{self.port}") for arg in _cmdline(pid)):
                _signal(pid, signal.SIGKILL)

    def _start(self, node: Node, args: list[str]) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        command = [self._ray, "start", *args, "--num-cpus", str(node.num_cpus), "--temp-dir", str(node.temp_dir),
                   "--disable-usage-stats"]
        if node.resources:
            command += ["--resources", json.dumps(node.resources)]
        self.nodes.append(node)
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({node.name}) failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def _pids(self, node: Node) -> list[int]:
        folder = str(node.temp_dir)
        mine = {pid for pid in _all_pids() if any(folder in arg for arg in _cmdline(pid))}
        mine |= {pid for pid in _all_pids() if _parent(pid) in mine}  # workers and agents (renamed ray::...)
        mine.discard(os.getpid())
        return sorted(mine)


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(OSError):  # gone already
        os.kill(pid, number)
