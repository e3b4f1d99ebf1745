"""What the chosen agent runtime for foreign images (docs/architecture.md, "The agent runtime
in an image that is not ratchet's") would add per task: the agent in its own container, its
commands run in the task container by the harness with ``docker exec``.

    python perf/exec_relay_overhead.py [--image IMAGE] [--commands 30] [--repeat 5]

Measured with the Docker SDK, the way the harness would do it:

  container  - one more container per task: create + start + remove of a locked container
               (network none, uid 65534, all capabilities dropped, read-only root, docker's init)
  exec       - one command through ``docker exec`` in a running container (as the sandbox uid),
               output read back: the round trip a relayed command costs
  relay      - the same command through the built relay (`benchmark._exec_relay`), sent by the
               seed agent's own client (``agent_seed.agent.relay_command``: HTTP over the unix
               socket, then ``docker exec`` of a ``setsid`` session with the output capped)
  local      - the same command run by ``subprocess`` inside the container (today's path: the
               agent runs its commands itself), timed in the container

Added per task = container + commands x (relay - local). Medians over ``--repeat``. The whole
path (two containers, the seed agent, the oracle model, grading) is measured by
``perf/agent_overhead.py --suite FILE`` on a file holding a ratchet task and the same task as
an official row (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import LoadSampler  # noqa: E402  (perf/ is sys.path[0])
from agent_seed.agent import relay_command  # noqa: E402
from benchmark import SANDBOX_USER, ExecRelay, ImageBuilder  # noqa: E402
from benchmark import docker_host as _docker  # noqa: E402

COMMAND = "cd /testbed 2>/dev/null || cd /; ls >/dev/null; git status --short >/dev/null 2>&1; echo ok"
_LOCAL = f"""
import subprocess, time
times = []
for _ in range({{n}}):
    t = time.perf_counter()
    subprocess.run(["bash", "-c", {COMMAND!r}], capture_output=True)
    times.append(time.perf_counter() - t)
times.sort()
print(times[len(times) // 2])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="the task image (default: ratchet's base image)")
    parser.add_argument("--commands", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sampler = LoadSampler()
    image = args.image or ImageBuilder().ensure_base()
    client = _docker.connect()
    hardening = dict(network_mode="none", user="65534:65534", cap_drop=["ALL"], read_only=True,
                     security_opt=["no-new-privileges"], init=True,
                     labels={_docker.CONTAINER_LABEL: _docker.owner()})
    lifecycle = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        container = client.containers.create(image, ["sleep", "infinity"], **hardening)
        container.start()
        container.remove(force=True, v=True)
        lifecycle.append(time.perf_counter() - started)
    task = client.containers.create(image, ["sleep", "infinity"], network_mode="none", init=True,
                                    labels={_docker.CONTAINER_LABEL: _docker.owner()})
    task.start()
    try:
        execs, locals_ = [], []
        for _ in range(args.repeat):
            rounds = []
            for _ in range(args.commands):
                started = time.perf_counter()
                result = task.exec_run(["bash", "-c", COMMAND], user="1000:1000")
                rounds.append(time.perf_counter() - started)
                assert result.exit_code == 0 and result.output.strip().endswith(b"ok"), result
            execs.append(statistics.median(rounds))
            out = task.exec_run(["python3", "-c", _LOCAL.format(n=args.commands)], user="1000:1000")
            locals_.append(float(out.output.decode().strip().splitlines()[-1]))
        relays = []
        with ExecRelay(_docker.Sandbox(task), user=SANDBOX_USER, environment={"HOME": "/tmp"}) as relay:
            for _ in range(args.repeat):
                rounds = []
                for _ in range(args.commands):
                    started = time.perf_counter()
                    code, output = relay_command(str(relay.socket_path), COMMAND, "/", 60)
                    rounds.append(time.perf_counter() - started)
                    assert code == 0 and output.strip().endswith("ok"), (code, output)
                relays.append(statistics.median(rounds))
    finally:
        task.remove(force=True, v=True)
    container_s = statistics.median(lifecycle)
    exec_s, local_s = statistics.median(execs), statistics.median(locals_)
    relay_s = statistics.median(relays)
    added = container_s + args.commands * (relay_s - local_s)
    print(f"image {image}")
    print(f"container (create+start+remove): {container_s:.3f}s")
    print(f"exec round trip: {exec_s * 1000:.1f} ms; through the relay: {relay_s * 1000:.1f} ms; "
          f"in-container subprocess: {local_s * 1000:.1f} ms")
    print(f"added per task with {args.commands} commands: {added:.2f}s")
    print(sampler.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
