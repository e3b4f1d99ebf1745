"""A throwaway Ray cluster on this machine: a head and worker nodes, each a real ``ray start``.

For the tests, ``perf/executor_scaling.py`` and trying ``--executor ray:ADDRESS`` without a
second machine. Every node is its own set of processes (GCS, raylet, object store, workers)
offering its own ``docker`` slots, so scheduling, the object store and node loss behave as
on a real cluster; the nodes share this machine's Docker daemon.

The cluster uses Ray's token authentication with a token of its own: a driver joins it with
`LocalCluster.client_env` in its environment (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalCluster"]

_STARTED = "Ray runtime started."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray() -> list[str]:
    script = Path(sys.executable).parent / "ray"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def _session_members(sid: int) -> list[int]:
    """Processes in session `sid`: a node's raylet, object store and workers."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


@dataclass
class LocalCluster:
    root: Path
    port: int
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)
    sessions: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    """Ray's temp dir: short, as its unix socket paths must fit in 107 bytes."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict[str, str]:
        """What a process needs in its environment to join (the cluster's auth token). Ray
        reads it when it is imported: set it before, or join from a child process."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.root / "auth_token")}

    @classmethod
    def start(cls, root: Path, *, slots: int = 1, cpus: int = 2,
              env: dict[str, str] | None = None) -> "LocalCluster":
        """A head node offering `slots` sandboxes (``docker`` resource)."""
        root.mkdir(parents=True, exist_ok=True)
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        cluster = cls(root, _free_port())
        cluster._launch("head", ["--head", "--port", str(cluster.port), "--include-dashboard",
                                 "false", "--temp-dir", str(cluster.sessions)], slots, cpus, env)
        return cluster

    def add_node(self, name: str, *, slots: int = 1, cpus: int = 2,
                 env: dict[str, str] | None = None) -> None:
        """A worker node joining the head; `env` is its processes' environment on top of
        this one's (a node-local cache, say)."""
        self._launch(name, ["--address", self.address], slots, cpus, env)

    def _launch(self, name: str, args: list[str], slots: int, cpus: int,
                env: dict[str, str] | None) -> None:
        log = self.root / f"{name}.log"
        command = [*_ray(), "start", *args, "--node-ip-address", "127.0.0.1",
                   "--num-cpus", str(cpus), "--resources", f'{{"docker": {slots}}}',
                   "--object-store-memory", str(200 * 2**20), "--disable-usage-stats", "--block"]
        env = {**os.environ, **self.client_env, "RATCHET_NODE_NAME": name, **(env or {})}
        with log.open("w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.nodes[name] = process
        deadline = time.monotonic() + 60
        while _STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray node {name} did not start; see {log}:\n"
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of the node, as when a machine dies."""
        process = self.nodes.pop(name)
        for pid in _session_members(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=30)

    def stop(self) -> None:
        """Worker nodes first, then the head."""
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            self.kill_node(name)
        shutil.rmtree(self.sessions, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
