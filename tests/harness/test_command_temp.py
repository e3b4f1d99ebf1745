"""Every ``ratchet`` command keeps its temp files in one dir of its own and removes it when it
ends, however it ends: a command that stops on an error leaves nothing in the temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app
from harness.loop import leftovers
from harness.loop.scratch import Scratch, system_temp

def _bench_run_without_a_model() -> int:
    """`bench run` copies the agent to a temp dir, then stops: no model was named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return CliRunner().invoke(app, ["bench", "run", "--suite", "quickstart"], env=env).exit_code


def test_a_command_that_stops_on_an_error_leaves_no_temp_dir(tmp_path, monkeypatch):
    """`ratchet bench run` with no model stops after it has copied the agent: with its own
    temp dir the copy goes with it; without (the defence off), the copy stays behind."""
    from harness.cli import common

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert _bench_run_without_a_model() == 2
    assert list(tmp_path.iterdir()) == []
    assert tempfile.tempdir == str(tmp_path)  # and the process's temp dir is restored

    monkeypatch.setattr(common, "_own_temp_dir", lambda ctx: None)  # the defence off
    assert _bench_run_without_a_model() == 2
    assert [p.name.startswith("ratchet-agent-") for p in tmp_path.iterdir()] == [True]


def test_a_runs_temp_dir_is_made_beside_its_commands_never_inside(tmp_path, monkeypatch):
    """`ratchet run` enters a dir for its run inside the command's: both are made in the
    system's temp dir (where the sweep looks), and leaving one gives back the other. Under a
    long TMPDIR the short names still differ."""
    for base in (tmp_path, tmp_path / ("x" * 60)):
        base.mkdir(exist_ok=True)
        monkeypatch.setattr(tempfile, "tempdir", str(base))
        command = Scratch.enter("cmd.run")
        run = Scratch.enter("run.r1")
        assert command.path.parent == run.path.parent == system_temp() == base
        assert command.path != run.path and tempfile.gettempdir() == str(run.path)
        run.leave()
        assert tempfile.gettempdir() == str(command.path) and command.path.is_dir()
        command.leave()
        assert tempfile.tempdir == str(base) and list(base.glob("ratchet-*")) == []


def test_a_killed_commands_temp_dir_is_swept_once_its_process_is_gone(tmp_path, monkeypatch):
    """SIGKILL runs no cleanup: the dir's name says whose it was, and the sweep removes it
    once that process is gone (never while it runs)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom harness.loop.scratch import Scratch\n"
         "s = Scratch.enter('cmd.bench')\nopen(s.path / 'ready', 'w').close()\ntime.sleep(60)"],
        env={**os.environ, "TMPDIR": str(tmp_path)})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while not (made := list(tmp_path.glob("ratchet-*/ready"))):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        assert leftovers.dirs() == []  # its owner runs
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    found = leftovers.dirs()
    assert [Path(item.ident) for item in found] == [made[0].parent]
    leftovers.remove(found)
    assert list(tmp_path.iterdir()) == []
