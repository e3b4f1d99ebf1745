"""A model endpoint that is there but fails every call (issue 16): it answers the start-up
check (``GET /models``) and then serves HTTP 503 to every chat completion, as an overloaded
or broken server does. Real Docker sandboxes, a real HTTP server, the real CLI.

`bench run` must exit non-zero naming the URL and must not write predictions for the tasks
that got no verdict (the official harness would grade their empty patches as the agent's
failure); the loop must stop with a non-zero exit naming the URL and OPENAI_BASE_URL, not
exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmark import load_suite
from harness.models._http import send_json
from tests.conftest import ROOT

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))
TASK = "isodate__isodate-0.7.2__leap-century-month-add"


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        send_json(self, 200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        send_json(self, 503, {"error": {"message": "overloaded", "type": "server_error"}})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    task = next(t for t in load_suite("quickstart").tasks if t.instance_id == TASK)
    path = tmp_path / "one.jsonl"
    path.write_text(task.model_dump_json(exclude_none=True) + "\n")
    return path


def _ratchet(*args: str, cwd: Path, url: str, retry_seconds: str | None = "0"
             ) -> subprocess.CompletedProcess:
    """`retry_seconds`: the gateway's retries ("0": none, an outage at once; None: the
    default five minutes, which outlast a short task's wall clock)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RATCHET_RETRY"))}
    env.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="sk-test", COLUMNS="300")
    if retry_seconds is not None:
        env["RATCHET_RETRY_SECONDS"] = retry_seconds
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)


@pytest.mark.parametrize("retry_seconds, timeout_s", [
    pytest.param("0", "240", id="failing-at-once"),
    pytest.param(None, "30", id="cut-off-while-retrying"),
])
def test_bench_run_with_a_failing_endpoint_names_it_and_writes_no_empty_predictions(
        tmp_path, suite, failing_url, retry_seconds, timeout_s):
    """Either way the task has no verdict: the call failed, or the task's wall clock ran
    out while the gateway was still retrying it (the agent never heard back; counting
    that as the agent's failure would be the endpoint's outage measured as the agent's)."""
    out = _ratchet("bench", "run", "--suite", str(suite), "--model", "gpt-4o-mini", "--run-id", "down",
                   "--agent", str(ROOT), "--timeout-s", timeout_s, cwd=tmp_path, url=failing_url,
                   retry_seconds=retry_seconds)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1, text[-3000:]
    assert failing_url in text and "OPENAI_BASE_URL" in text and "Traceback" not in text
    predictions = tmp_path / "runs" / "bench" / "down" / "predictions.jsonl"
    assert predictions.read_text() == ""  # the task has no verdict: no (empty) prediction


def test_a_loop_stopped_by_a_failing_endpoint_exits_non_zero_naming_it(tmp_path, suite, failing_url):
    init = subprocess.run([RATCHET, "init", str(tmp_path / "ws")], capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    out = _ratchet("run", "--suite", str(suite), "--generations", "1", "--run-id", "down",
                   cwd=tmp_path / "ws", url=failing_url)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1, text[-3000:]
    assert failing_url in text and "OPENAI_BASE_URL" in text and "Traceback" not in text
    assert "ratchet resume down" in text
