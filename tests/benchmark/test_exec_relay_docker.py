"""The exec relay's limits, against a real task container of the SWE-bench-layout image.

The client is the seed agent's own (`agent_seed.agent.relay_command`, HTTP over the unix
socket), so these are the requests an agent sends. Each limit is shown twice: the attack
works with the limit switched off (a relay whose ceiling or cap is out of reach) and fails
with it on.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from agent_seed.agent import relay_command
from benchmark import _docker, _exec_relay
from benchmark._exec_relay import ExecRelay
from benchmark._images import SANDBOX_USER
from tests.benchmark.swebench_layout import build_layout_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def layout_image(docker_daemon):
    return build_layout_image()[0]


@pytest.fixture
def task_box(layout_image):
    with _docker.sandbox(layout_image, cap_add=["CHOWN"]) as box:
        assert box.capture(["chown", "-R", SANDBOX_USER, "/testbed"]).exit_code == 0
        yield box


def _relay(box, **limits) -> ExecRelay:
    return ExecRelay(box, user=SANDBOX_USER, environment={"HOME": "/tmp"},
                     setup="source /opt/miniconda3/bin/activate\nconda activate testbed", **limits)


def _sandbox_processes(box) -> str:
    """The command lines of the sandbox user's processes in `box`, one a line (no ps here)."""
    return box.capture(["bash", "-c", "for p in /proc/[0-9]*; do [ \"$(stat -c %u $p 2>/dev/null)\" "
                        "= 1000 ] || continue; tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"]
                       ).stdout.decode()


def test_a_command_runs_in_the_task_container_as_the_sandbox_user_in_its_environment(task_box):
    with _relay(task_box) as relay:
        code, output = relay_command(str(relay.socket_path),
                                     "id -u; pwd; echo $CONDA_DEFAULT_ENV; echo $GREETING; "
                                     "echo oops >&2; exit 3", "/testbed", 30, {"GREETING": "hi"})
    assert code == 3
    assert output.split() == ["1000", "/testbed", "testbed", "hi", "oops"]


def test_a_command_past_its_timeout_is_killed_with_its_process_group(task_box):
    """The agent asks for a day; the relay's ceiling (2 s) holds. Off (a ceiling out of
    reach), the same request leaves the command running."""
    command = "sleep 86400 & sleep 86401; echo never"
    with _relay(task_box, max_timeout_s=2) as relay:
        relay_command(str(relay.socket_path), "setsid sleep 86405 >/dev/null 2>&1 &", "/", 10)
        started = time.monotonic()
        code, output = relay_command(str(relay.socket_path), command, "/testbed", 86400)
        elapsed = time.monotonic() - started
    assert code is None and "never" not in output and elapsed < 20
    left = _sandbox_processes(task_box)
    assert "sleep 86400" not in left and "sleep 86401" not in left
    assert "sleep 86405" in left  # the group was killed, not every process of the user

    with _relay(task_box, max_timeout_s=10 ** 6) as relay:  # the defence off
        done = threading.Event()
        threading.Thread(target=lambda: (relay_command(str(relay.socket_path), command,
                                                       "/testbed", 86400), done.set()),
                         daemon=True).start()
        time.sleep(4)
        assert not done.is_set()
        assert "sleep 86401" in _sandbox_processes(task_box)
        task_box.kill_user(SANDBOX_USER)


def test_a_process_that_leaves_the_group_cannot_hold_the_relay_past_the_timeout(task_box,
                                                                                 monkeypatch):
    """A child in a session of its own keeps the output open after the group is killed:
    every process of the user started since the command goes; one an earlier command left
    running (a server) stays."""
    with _relay(task_box, max_timeout_s=2) as relay:
        code, _ = relay_command(str(relay.socket_path), "setsid sleep 86404 >/dev/null 2>&1 &",
                                "/testbed", 10)
        assert code == 0
        started = time.monotonic()
        code, _ = relay_command(str(relay.socket_path), "setsid sleep 86402 & sleep 86403",
                                "/testbed", 60)
        assert code is None and time.monotonic() - started < 20
    left = _sandbox_processes(task_box)
    assert "sleep 86402" not in left and "sleep 86403" not in left
    assert "sleep 86404" in left

    # the defence off (the process group alone is killed, no sweep): the escaped process lives on
    monkeypatch.setattr(_exec_relay, "_KILL", 'kill -9 -- "-$1"')
    monkeypatch.setattr(_docker.Sandbox, "kill_user", lambda self, user: None)
    with _relay(task_box, max_timeout_s=2) as relay:
        code, _ = relay_command(str(relay.socket_path), "setsid sleep 86402 & sleep 86403",
                                "/testbed", 60)
    assert code is None
    left = _sandbox_processes(task_box)
    assert "sleep 86402" in left and "sleep 86403" not in left


def test_huge_output_is_capped(task_box):
    """5 MB of output: 64 KiB of it (head and tail) reach the agent. Off (a cap above the
    output), all of it does."""
    command = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo THE-END"
    with _relay(task_box, output_cap=64 * 1024) as relay:
        code, output = relay_command(str(relay.socket_path), command, "/testbed", 60)
    assert code == 0 and len(output) < 65 * 1024
    assert output.rstrip().endswith("THE-END") and "bytes of output left out" in output
    with _relay(task_box, output_cap=64 << 20) as relay:  # the defence off
        code, output = relay_command(str(relay.socket_path), command, "/testbed", 60)
    assert code == 0 and len(output) > 5_000_000


def _post(path, body: bytes) -> tuple[int, dict]:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sock.sendall(b"POST /exec HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_bad_requests_and_a_second_command_at_once_are_refused(task_box):
    with _relay(task_box) as relay:
        status, body = _post(relay.socket_path, b'{"command": 1}')
        assert status == 400 and "command" in body["error"]
        status, body = _post(relay.socket_path, json.dumps(
            {"command": "true", "env": {"BAD NAME": "x"}}).encode())
        assert status == 400
        # a NUL byte is not a Docker failure (which would make the run unscored) but the
        # command's own: the runtime's refusal comes back as its output
        code, output = relay_command(str(relay.socket_path), "echo \0", "/testbed", 10,
                                     {"X": "\0"})
        assert code not in (0, None) and relay.infra_error is None
        slow = threading.Thread(target=relay_command, args=(str(relay.socket_path), "sleep 3",
                                                            "/testbed", 10), daemon=True)
        slow.start()
        time.sleep(1)
        status, body = _post(relay.socket_path, b'{"command": "true"}')
        assert status == 409 and "one command at a time" in body["error"]
        slow.join()
