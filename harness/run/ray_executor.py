"""Task runs and gradings as Ray tasks, fanned out over a cluster (``--executor ray[:ADDRESS]``).

Each task run (agent + grading) or grading is one Ray task, scheduled on a node that offers
the ``docker`` custom resource (start nodes with ``ray start --resources '{"docker": N}'``,
N = sandboxes at a time there) and declaring one CPU and its sandbox's memory limit.

What travels, and how (never through a registry):

- **The agent's source** for the generation: a tar put once in Ray's object store; a node
  unpacks it under its cache and checks its content hash.
- **Images**: a node that lacks a task's image *builds it from the same recipe*. Tags are
  content-addressed, so every node arrives at the same tag. The inputs that need the
  network (the task's source tree, the wheelhouses) are fetched once on the controller and
  put in the object store; a node pulls them only when it must build. Shipping built images
  instead would move hundreds of MB per task (``docker save``) where the inputs are a few
  MB. The base image is bootstrapped on the node (mmdebstrap needs a Debian mirror) or
  named with ``RATCHET_BASE_IMAGE``.
- **Model calls**: the sandbox still sees a unix socket; a relay on the node
  (`harness.models.relay`) carries each call to the controller's gateway over TCP with the run's
  token. Credentials and the ledger stay on the controller.

A node lost mid-task (`ray.exceptions.NodeDiedError` and kin) is an infrastructure error:
the run is started again, on another node, with a fresh gateway channel, and only the
attempt that finishes is recorded, on the controller, as with the local pool.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from benchmark import GradeResult, Grader, Job, TaskSpec, task_image_tag
from benchmark import AGENT_RUNTIME, DockerEnvironment, ImageBuilder, SandboxLimits, cache_dir, pack_directory, wheel_key
from harness.run.agent_source import AgentSource, pack_agent, unpack_agent
from harness.run.evaluate import SandboxResult, TaskOutcome, TaskRunner, run_in_sandbox
from harness.run.executors import ExecutorError, build_images
from harness.models.gateway import RelayEndpoint
from harness.models.relay import Relay

try:
    import ray
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError
except ImportError:  # an optional extra; `RayExecutor.connect` says how to get it
    ray = None

__all__ = ["DOCKER_RESOURCE", "RayExecutor"]

DOCKER_RESOURCE = "docker"
"""The custom resource a node offers per concurrent sandbox."""
_FORWARDED_ENV = ("RATCHET_IMAGE_NAMESPACE", "RATCHET_BASE_IMAGE")
"""Settings that name images: the same on every node as on the controller."""


def _bytes(size: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    size = size.strip().lower()
    return int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


def _this_node() -> str:
    """The node's name in outcomes and trajectories: ``RATCHET_NODE_NAME`` where the node
    was started with one, else its address and Ray node id."""
    return (os.environ.get("RATCHET_NODE_NAME")
            or f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}")


# -- on a node ------------------------------------------------------------------------------


class ShippedInputs:
    """`ImageInputs` on a node: the controller's bytes from the object store, pulled only
    when this node has to build."""

    def __init__(self, refs: dict[str, Any]):
        self._refs = refs

    def source(self, task: TaskSpec) -> tuple[bytes, list[str]]:
        tag = task_image_tag(task)
        tree_ref, requires = self._refs["trees"][tag]
        return ray.get(tree_ref), list(requires)

    def wheels(self, requirements: list[str], target: Path) -> None:
        ref = self._refs["wheels"].get(wheel_key(requirements))
        if ref is None:
            raise ExecutorError(f"the controller sent no wheels for {requirements}")
        with tarfile.open(fileobj=io.BytesIO(ray.get(ref))) as archive:
            archive.extractall(target, filter="data")


@dataclass(frozen=True)
class _NodeWork:
    """Everything a node needs for one task run or grading; pickled into the Ray task."""

    task: TaskSpec
    inputs: dict[str, Any]
    grade_limits: SandboxLimits
    label: str
    patch: str | None = None
    agent_tree: str = ""
    model: str = ""
    agent_limits: SandboxLimits = field(default_factory=SandboxLimits)
    agent_timeout_s: float = 1800.0
    relay: RelayEndpoint | None = None
    channel_id: str = ""


def _run_on_node(work: _NodeWork, agent_tar: bytes) -> SandboxResult:
    node = _this_node()
    builder = ImageBuilder(inputs=ShippedInputs(work.inputs))
    agent_dir = unpack_agent(agent_tar, work.agent_tree, cache_dir() / "agents")
    with tempfile.TemporaryDirectory(prefix="ratchet-node-") as scratch, \
            Relay(work.relay, work.channel_id, node=node, timeout_s=work.agent_timeout_s) as relay:
        grader = Grader(builder, Path(scratch), work.grade_limits)
        environment = DockerEnvironment(builder, limits=work.agent_limits,
                                        timeout_s=work.agent_timeout_s)
        result = run_in_sandbox(work.task, agent_dir, socket_path=relay.socket_path,
                                model=work.model, environment=environment, grader=grader,
                                label=work.label)
        if result.grade is not None:
            result.grade_log = _read(result.grade.log_path)
    if relay.unreachable and not (result.grade and result.grade.resolved) and not result.error:
        result.error = (f"node {node} could not reach the controller's gateway at "
                        f"{relay.unreachable}; set RATCHET_GATEWAY_HOST (and _PORT) to an "
                        "address the nodes reach")
    result.node = node
    return result


def _grade_on_node(work: _NodeWork) -> tuple[GradeResult, str, str]:
    builder = ImageBuilder(inputs=ShippedInputs(work.inputs))
    with tempfile.TemporaryDirectory(prefix="ratchet-node-") as scratch:
        result = Grader(builder, Path(scratch), work.grade_limits).grade(
            work.task, work.patch, label=work.label)
        return result, _read(result.log_path), _this_node()


def _prepare_on_node(inputs: dict[str, Any], tasks: list[TaskSpec]) -> dict:
    return build_images(ImageBuilder(inputs=ShippedInputs(inputs)), tasks, node=_this_node())


def _probe_gateway(url: str) -> str | None:
    """None if this node gets an HTTP answer from the gateway's relay endpoint."""
    try:
        urllib.request.urlopen(f"{url}/relay/probe/v1/models", timeout=10)
    except urllib.error.HTTPError:
        return None  # 401 without the token: reached
    except OSError as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


# -- on the controller ----------------------------------------------------------------------


class RayExecutor:
    """Runs the work on a Ray cluster; see the module doc. Make one with `connect`."""

    max_attempts = 3
    """Starts of one task run when its node is lost; then it is an infrastructure error."""

    def __init__(self, *, address: str | None,
                 on_event: Callable[[str], None] = lambda message: None,
                 cpus_per_task: float = 1.0):
        self.address = address
        self.on_event = on_event
        self.cpus_per_task = cpus_per_task
        self._agents: dict[str, Any] = {}
        self._trees: dict[str, tuple[Any, list[str]]] = {}
        self._wheels: dict[str, Any] = {}
        self._slots_at = (0.0, 0)
        self._reached: set[str] = set()

    @classmethod
    def connect(cls, address: str | None, *, local_slots: int = 2,
                on_event: Callable[[str], None] = lambda message: None) -> "RayExecutor":
        """Join the cluster at `address` (``auto``: this machine's; None: start a local
        Ray instance offering `local_slots` sandboxes)."""
        if ray is None:
            raise ExecutorError("--executor ray needs Ray: pip install 'ratchet[ray]' "
                                "(or pip install ray)")
        env = {name: os.environ[name] for name in _FORWARDED_ENV if os.environ.get(name)}
        options: dict[str, Any] = dict(logging_level="ERROR", log_to_driver=False,
                                       runtime_env={"env_vars": env} if env else None)
        if address is None:
            options.update(num_cpus=max(2, local_slots), include_dashboard=False,
                           resources={DOCKER_RESOURCE: local_slots})
        else:
            _check_reachable(address)
            options["address"] = address
        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorError(
                f"cannot join the Ray cluster at {address or 'a local instance'}: {exc}. If the "
                "cluster uses token authentication, set RAY_AUTH_MODE=token and the token "
                "(RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) before starting ratchet") from None
        executor = cls(address=address, on_event=on_event)
        if executor._slots(fresh=True) == 0:
            ray.shutdown()
            raise ExecutorError(
                f"no node of the Ray cluster at {address} offers the {DOCKER_RESOURCE!r} "
                f"resource: start each node that has Docker with "
                f"`ray start ... --resources '{{\"{DOCKER_RESOURCE}\": N}}'` (N sandboxes at a time)")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        on_event(f"ray: {len(nodes)} node(s), {executor._slots()} sandbox slot(s)")
        return executor

    def close(self) -> None:
        if ray is not None and ray.is_initialized():
            ray.shutdown()

    # -- what travels ---------------------------------------------------------------------

    def _slots(self, *, fresh: bool = False) -> int:
        """Sandboxes the cluster can run at once (re-read every few seconds: nodes come
        and go)."""
        read_at, slots = self._slots_at
        if fresh or time.monotonic() - read_at > 2.0:
            slots = int(ray.cluster_resources().get(DOCKER_RESOURCE, 0))
            self._slots_at = (time.monotonic(), slots)
        return slots

    def _inputs(self, builder: ImageBuilder, task: TaskSpec) -> dict[str, Any]:
        """Refs to what building `task`'s image needs from the network, fetched and put
        once here (a prebuilt `task.image` needs nothing: the node must have it)."""
        if task.image or task.environment is None:
            return {"trees": {}, "wheels": {}}
        tag = task_image_tag(task)
        if tag not in self._trees:
            tree, requires = builder.inputs.source(task)
            self._trees[tag] = (ray.put(tree), requires)
        requires = self._trees[tag][1]
        wheels = {}
        for requirements in (list(task.environment.python_deps), list(AGENT_RUNTIME), requires):
            key = wheel_key(requirements)
            if key not in self._wheels:
                self._wheels[key] = ray.put(pack_directory(builder.wheelhouse(requirements)))
            wheels[key] = self._wheels[key]
        return {"trees": {tag: self._trees[tag]}, "wheels": wheels}

    def _agent(self, agent: AgentSource) -> Any:
        if agent.tree_hash not in self._agents:
            self._agents[agent.tree_hash] = ray.put(pack_agent(agent))
        return self._agents[agent.tree_hash]

    def _serve_relay(self, runner: TaskRunner) -> RelayEndpoint:
        """The gateway's relay endpoint, checked once from a node: a misconfigured address
        fails here, naming the fix, instead of failing every agent's model calls."""
        host, port = _gateway_address()
        try:
            endpoint = runner.gateway.serve_relay(host, port)
        except OSError as exc:
            raise ExecutorError(f"cannot serve the gateway for the nodes at {host}:{port}: "
                                f"{exc.strerror or exc}; set RATCHET_GATEWAY_HOST (and "
                                "RATCHET_GATEWAY_PORT) to an address of this machine") from None
        if endpoint.url not in self._reached:
            probe = ray.remote(_probe_gateway).options(num_cpus=0, resources={DOCKER_RESOURCE: 0.001})
            problem = ray.get(probe.remote(endpoint.url))
            if problem:
                raise ExecutorError(f"a node cannot reach the controller's gateway at {endpoint.url} "
                                    f"({problem}); set RATCHET_GATEWAY_HOST (and RATCHET_GATEWAY_PORT) "
                                    "to an address the nodes reach")
            self._reached.add(endpoint.url)
        return endpoint

    def _options(self, memory: str) -> dict[str, Any]:
        return dict(num_cpus=self.cpus_per_task, memory=_bytes(memory),
                    resources={DOCKER_RESOURCE: 1}, max_retries=0, retry_exceptions=False)

    # -- the executor protocol ------------------------------------------------------------

    def run_tasks(self, runner: TaskRunner, agent: AgentSource, tasks: Sequence[TaskSpec], *,
                  generation: str, should_start: Callable[[], bool] = lambda: True,
                  ) -> Iterator[tuple[TaskSpec, TaskOutcome | None]]:
        endpoint = self._serve_relay(runner)
        environment = runner.environment
        agent_limits = getattr(environment, "limits", SandboxLimits())
        remote = ray.remote(_run_on_node).options(**self._options(agent_limits.memory))
        agent_ref = self._agent(agent)

        def start(task: TaskSpec, attempt: int):
            if not should_start():
                return None
            ticket = runner.begin(task, agent, generation=generation, relay=True)
            work = _NodeWork(task, self._inputs(runner.grader.builder, task), runner.grader.limits,
                             ticket.label, agent_tree=agent.tree_hash, model=runner.gateway.model,
                             agent_limits=agent_limits,
                             agent_timeout_s=getattr(environment, "timeout_s", 1800.0),
                             relay=endpoint, channel_id=ticket.channel.relay_id)
            return remote.remote(work, agent_ref), ticket

        for task, value, ticket, error in self._drive(tasks, start, runner.abandon,
                                                      lambda task: task.instance_id):
            if ticket is None:
                yield task, None
            elif error is not None:
                yield task, runner.finish(ticket, SandboxResult(None, error))
            else:
                yield task, runner.finish(ticket, value)

    def grade(self, grader: Grader, jobs: Sequence[Job]) -> Iterator[GradeResult]:
        remote = ray.remote(_grade_on_node).options(**self._options(grader.limits.memory))

        def start(job: Job, attempt: int):
            work = _NodeWork(job.task, self._inputs(grader.builder, job.task), grader.limits,
                             job.label, patch=job.patch)
            return remote.remote(work), None

        for job, value, _, error in self._drive(jobs, start, lambda ctx: None,
                                                lambda job: f"{job.task.instance_id} ({job.label})"):
            if error is not None:
                result = GradeResult(job.task.instance_id, job.label, False, job.patch is not None,
                                     False, False, error=error)
                yield grader.adopt(result, job.patch, f"infrastructure error: {error}\n")
            else:
                result, log, _node = value
                yield grader.adopt(result, job.patch, log)

    def prepare(self, builder: ImageBuilder, tasks: Sequence[TaskSpec]) -> list[dict]:
        """One build task pinned to each live node with a sandbox slot."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        inputs: dict[str, Any] = {"trees": {}, "wheels": {}}
        for task in tasks:
            for kind, refs in self._inputs(builder, task).items():
                inputs[kind].update(refs)
        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(DOCKER_RESOURCE)]
        remote = ray.remote(_prepare_on_node)
        refs = {remote.options(num_cpus=self.cpus_per_task, resources={DOCKER_RESOURCE: 1},
                               scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                               ).remote(inputs, list(tasks)): n for n in nodes}
        results = []
        for ref, node in refs.items():
            try:
                results.append(ray.get(ref))
            except RayError as exc:
                results.append({"node": f"{node['NodeManagerAddress']}/{node['NodeID'][:8]}",
                                "tasks": len(tasks), "built": [],
                                "errors": {"*": f"the node was lost: {type(exc).__name__}"}})
        return results

    def _drive(self, items: Sequence[Any], start: Callable[[Any, int], Any],
               abandon: Callable[[Any], None], name: Callable[[Any], str]) -> Iterator[tuple]:
        """Submit `items` as the cluster has room, yield (item, value, context, error) as
        each finishes; a run whose node was lost is abandoned and started again."""
        queue = deque((item, 0) for item in items)
        pending: dict[Any, tuple[Any, int, Any]] = {}
        try:
            while queue or pending:
                while queue and len(pending) < max(1, self._slots()):
                    item, attempt = queue.popleft()
                    started = start(item, attempt)
                    if started is None:
                        yield item, None, None, None
                        continue
                    ref, context = started
                    pending[ref] = (item, attempt, context)
                if not pending:
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1)
                item, attempt, context = pending.pop(ready[0])
                try:
                    value = ray.get(ready[0])
                except RayTaskError as exc:  # our code raised on the node: not the node's fault
                    yield item, None, context, f"failed on a Ray node: {exc}"
                except (RayError, TaskCancelledError) as exc:  # the node (or its worker) was lost
                    abandon(context)
                    what = f"{name(item)}: lost its Ray node ({type(exc).__name__})"
                    if attempt + 1 < self.max_attempts:
                        self.on_event(f"{what}; starting it again on another node")
                        self._slots(fresh=True)
                        queue.appendleft((item, attempt + 1))
                        continue
                    yield item, None, context, f"{what} {self.max_attempts} times; giving up: {exc}"
                else:
                    yield item, value, context, None
        finally:
            for ref, (_item, _attempt, context) in pending.items():
                ray.cancel(ref, force=True)
                abandon(context)


def _gateway_address() -> tuple[str, int]:
    """Where this machine's gateway listens for the nodes' relays: ``RATCHET_GATEWAY_HOST``
    (default: the address Ray knows this machine by) and ``RATCHET_GATEWAY_PORT`` (default:
    any free port; set it to open one port in a firewall)."""
    port = os.environ.get("RATCHET_GATEWAY_PORT") or "0"
    if not port.isdigit():
        raise ExecutorError(f"RATCHET_GATEWAY_PORT={port!r} is not a port number")
    return os.environ.get("RATCHET_GATEWAY_HOST") or ray.util.get_node_ip_address(), int(port)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's long retries, when nothing listens at `address`."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--executor ray:{address}: give the head's HOST:PORT (its GCS "
                            "address, as `ray start --head` prints), or ray:auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ExecutorError(f"no Ray cluster at {address} ({exc.strerror or exc}): start one "
                            f"with `ray start --head --port {port}`, or check the address") from None
