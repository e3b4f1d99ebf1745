"""The host's end of the grading channel (`_docker.WaitingGrading.collect`), on a real socket
pair carrying Docker's multiplexed attach framing: the result is found after whatever the
wrapper printed before it, on stdout only; parts stream to files; a torn stream, a part
past the cap and a deadline each end the read the way the grader expects."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from benchmark import _docker, _wrapper
from benchmark._errors import InfraError


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def _result(result: dict, log: bytes | None) -> bytes:
    """What `_wrapper.send_result` writes, built by it (into a pipe)."""
    import os
    import tempfile

    out = tempfile.mkdtemp()
    if log is not None:
        with open(os.path.join(out, "tests.log"), "wb") as handle:
            handle.write(log)
    read, write = os.pipe()
    old, _wrapper.OUT = _wrapper.OUT, out
    try:
        sender = threading.Thread(target=lambda: (_wrapper.send_result(result, fd=write),
                                                  os.close(write)))
        sender.start()
        chunks = []
        while chunk := os.read(read, 1 << 16):
            chunks.append(chunk)
        sender.join()
    finally:
        _wrapper.OUT = old
        os.close(read)
    return b"".join(chunks)


def _collect(tmp_path, frames: list[bytes], *, deadline_s: float = 10, cap: int = 1 << 30,
             close: bool = True):
    host, container = socket.socketpair()

    def feed():
        for frame in frames:  # in small pieces, as a socket may deliver them
            for at in range(0, len(frame), 7):
                container.sendall(frame[at:at + 7])
        if close:
            container.close()

    threading.Thread(target=feed, daemon=True).start()
    waiting = _docker.WaitingGrading(container=None, stream=host, image="test")
    try:
        return waiting.collect(tmp_path / "out", time.monotonic() + deadline_s, cap)
    finally:
        host.close()
        if not close:
            container.close()


def test_the_result_after_noise_and_stderr_is_read_to_files(tmp_path):
    payload = _result({"exit_code": 0, "guard": {"applied": True}}, b"== 3 passed ==\n" * 1000)
    half = len(payload) // 2
    frames = [_frame(1, b"the wrapper's own line\n"), _frame(2, b"a warning\n"),
              _frame(1, payload[:5]), _frame(2, b"stderr between frames\n"),
              _frame(1, payload[5:half]), _frame(1, payload[half:])]
    files, tail, killed = _collect(tmp_path, frames)
    assert not killed
    assert json.loads(files["result.json"].read_text()) == {"exit_code": 0,
                                                           "guard": {"applied": True}}
    assert files["tests.log"].read_bytes() == b"== 3 passed ==\n" * 1000
    assert "the wrapper's own line" in tail and "a warning" in tail


def test_a_marker_on_stderr_is_not_a_result(tmp_path):
    forged = _result({"exit_code": 0}, b"1 passed")
    files, tail, killed = _collect(tmp_path, [_frame(2, forged)])
    assert files == {} and not killed


def test_the_tests_never_ran_so_no_log_is_written(tmp_path):
    files, _, _ = _collect(tmp_path, [_frame(1, _result({"guard": {"refused": ["x"]}}, None))])
    assert set(files) == {"result.json"}


def test_a_torn_result_is_no_result(tmp_path):
    payload = _result({"exit_code": 0}, b"x" * 5000)
    files, _, killed = _collect(tmp_path, [_frame(1, payload[:-10])])
    assert files == {} and not killed


def test_a_result_past_the_cap_is_the_infrastructures_error(tmp_path):
    payload = _result({"exit_code": 0}, b"x" * 5000)
    with pytest.raises(InfraError, match="passed 1000 bytes"):
        _collect(tmp_path, [_frame(1, payload)], cap=1000)


def test_the_deadline_ends_the_read(tmp_path):
    started = time.monotonic()
    files, _, killed = _collect(tmp_path, [_frame(1, b"working...\n")], deadline_s=0.5,
                                close=False)
    assert killed and files == {}
    assert time.monotonic() - started < 5


def test_the_wrapper_reads_its_job_whole_and_nothing_when_the_host_goes():
    import os

    job = {"spec": {"test_command": "pytest"}, "patch": "x" * 200_000}
    data = json.dumps(job).encode()
    read, write = os.pipe()
    threading.Thread(target=lambda: (os.write(write, len(data).to_bytes(8, "big")),
                                     [os.write(write, data[i:i + 4096])
                                      for i in range(0, len(data), 4096)],
                                     os.close(write))).start()
    assert _wrapper.read_job(read, idle_s=10) == job
    os.close(read)
    read, write = os.pipe()
    os.write(write, (100).to_bytes(8, "big") + b"{}")
    os.close(write)
    assert _wrapper.read_job(read, idle_s=10) is None  # ended inside the job
    os.close(read)


def test_both_ends_agree_on_the_framing():
    """The wrapper runs alone in the container (standard library only), so it keeps its own
    copy of the constants the host reads by."""
    assert _wrapper.RESULT_MAGIC == _docker.RESULT_MAGIC
    assert _wrapper.NO_LOG == _docker.NO_PART
