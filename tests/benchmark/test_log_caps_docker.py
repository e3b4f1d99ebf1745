"""What code in a sandbox prints cannot fill the host's disk or the harness's memory.

The attack: 40 MB written to the container's stdout (for an agent, through
``/proc/1/fd/1``; for a grading, by the tests). With the log driver's cap off, all of it
lands in the host's log file; with it on, at most 16 MB does, and the harness reads back at
most `LOG_READ_LIMIT` of it. An agent process cannot even reach PID 1's stdout.
"""

from __future__ import annotations

import os

import pytest

from benchmark import ImageBuilder, load_tasks
from benchmark import _docker
from benchmark._images import SANDBOX_USER
from tests.conftest import DATA

pytestmark = pytest.mark.docker

FLOOD = "head -c 40000000 /dev/zero | tr '\\0' 'x' | fold -w 1000"
CAP = 16 * 1024 * 1024


def _on_disk(container) -> int:
    container.reload()
    path = container.attrs["LogPath"]
    return sum(os.path.getsize(p) for p in (path, path + ".1") if os.path.exists(p))


@pytest.fixture(scope="module")
def image():
    return ImageBuilder().ensure_task(load_tasks(DATA / "handwritten.jsonl").tasks[0])


@pytest.mark.parametrize("capped", [False, True])
def test_a_flood_of_output_is_capped_by_the_log_driver(image, capped):
    if not os.access("/var/lib/docker/containers", os.R_OK):
        pytest.skip("the daemon's log files are not readable from here")
    options = _docker._hardened(_docker.SandboxLimits())
    if not capped:
        options.pop("log_config")  # the defence off: the daemon's default, unbounded
    with _docker._finished_container(image, FLOOD, archives=[], timeout_s=120,
                                     **options) as (container, code, _, log):
        size = _on_disk(container)
    assert code == 0
    if capped:
        assert size <= CAP + 2 * 1024 * 1024
        assert len(log.encode()) <= _docker.LOG_READ_LIMIT + 100
    else:
        assert size > 40_000_000  # json-file keeps every byte (and more)


def test_run_script_reads_back_at_most_the_limit(image):
    run = _docker.run_script(image, FLOOD, timeout_s=120)
    assert run.exit_code == 0
    assert len(run.log.encode()) <= _docker.LOG_READ_LIMIT + 100


def test_an_agent_process_cannot_write_to_the_containers_stdout(image):
    """The agent's sandbox keeps PID 1 (and so the container log) out of the agent's reach."""
    with _docker.sandbox(image) as box:
        code, _ = box.run(["bash", "-c", f"{FLOOD} > /proc/1/fd/1"], user=SANDBOX_USER,
                          timeout_s=60)
        assert code != 0
        assert _on_disk(box.container) < 1024 * 1024 or not os.access(
            "/var/lib/docker/containers", os.R_OK)
        assert box.container.attrs["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-size": "8m", "max-file": "2"}}
