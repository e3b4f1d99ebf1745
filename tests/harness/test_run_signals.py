"""Runs that are safe to kill and leave alone, with real processes, real Docker and the real
CLI: SIGTERM is Ctrl-C, a second signal stops the tasks in flight at once, a kill -9 leaves
nothing once the run is resumed, and `ratchet gc` removes what is left."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import git
import pytest

from benchmark import docker_host as _docker
from benchmark import ImageBuilder
from benchmark import IMAGE_RECIPES as RECIPES
from benchmark import RECIPE_LABEL
from benchmark import processes, start_ticks
from harness.cli.demo import demo_agent_script
from harness.loop.journal import Journal, replay
from harness.loop.lineage import Lineage
from harness.models.scripted_model import Rule, Script, ScriptedModelServer
from tests.harness.test_loop import SLICE, _evaluated_twice, suite, workspace  # noqa: F401

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))


@pytest.fixture
def short_tmp():
    """A TMPDIR of the run's own (short: a gateway socket path must stay under 108 bytes), so
    every temp and socket dir the run makes can be counted."""
    path = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return {**env, "COLUMNS": "200", "TMPDIR": str(tmp), **extra}


def _start(workspace: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([RATCHET, *args], cwd=workspace, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _count(journal: Path, event: str, **match) -> int:
    if not journal.exists():
        return 0
    return sum(1 for e in Journal.read(journal) if e["event"] == event
               and all(e.get(k) == v for k, v in match.items()))


def _run_containers(workspace: Path, run: str) -> list:
    return docker.from_env().containers.list(all=True, ignore_removed=True, filters={"label": [
        f"{_docker.RUN_LABEL}={run}", f"{_docker.WORKSPACE_LABEL}={workspace}"]})


def _leftovers(workspace: Path, run: str, tmp: Path, volumes: set[str]) -> dict[str, int]:
    client = docker.from_env()
    existing = {v.name for v in client.volumes.list()}
    trees = workspace / "runs" / run / "worktrees"
    return {"containers": len(_run_containers(workspace, run)),
            "volumes": len(volumes & existing),
            "worktrees": len(list(trees.glob("gen-*"))) if trees.is_dir() else 0,
            "temp dirs": len(list(tmp.glob("ratchet-*"))),
            "socket dirs": len(list(tmp.glob("**/ratchet-gw-*")))}


def test_sigterm_stops_cleanly_and_resumes_to_the_same_lineage(workspace, suite, short_tmp):
    """SIGTERM (systemd, Kubernetes, `timeout`) acts as Ctrl-C: the task in flight finishes,
    `run_stopped` is journaled, the exit code is 143; while it runs a second writer is
    refused; `ratchet resume` ends with the lineage of an uninterrupted run, nothing
    evaluated twice, and nothing of the run left behind."""
    env = _env(short_tmp)
    journal = workspace / "runs" / "s1" / "journal.jsonl"
    proc = _start(workspace, env, "run", "--suite", str(suite), "--generations", "1", "--scripted",
                  "demo", "--run-id", "s1", "--workers", "1", "--acceptance", "strict")
    _wait_for(lambda: _count(journal, "task_evaluated") >= 1, "a task evaluated")
    for args in (["resume", "s1"], ["run", "--suite", str(suite), "--run-id", "s1", "--scripted", "demo"]):
        second = subprocess.run([RATCHET, *args], cwd=workspace, env=env, capture_output=True, text=True)
        assert second.returncode == 2 and "run s1 is live" in second.stderr, second.stderr
        assert f"pid {proc.pid}" in second.stderr
    runs = subprocess.run([RATCHET, "runs"], cwd=workspace, env=env, capture_output=True, text=True)
    assert f"live: pid {proc.pid}" in runs.stdout, runs.stdout
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-2000:]
    assert "stopping after the tasks in flight" in stderr and "ratchet resume s1" in stdout
    events = Journal.read(journal)
    assert events[-1]["event"] == "run_stopped"
    stopped = replay(events)
    assert stopped.ended and stopped.end_reason.startswith("run_stopped")
    assert not (1 in stopped.generations and stopped.generations[1].recorded)

    resumed = subprocess.run([RATCHET, "resume", "s1"], cwd=workspace, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    state = replay(Journal.read(journal))
    assert {n: g.verdict for n, g in state.generations.items()} == {0: "accepted", 1: "accepted"}
    assert set(stopped.evaluations) <= set(state.evaluations) and _evaluated_twice(workspace, "s1") == []
    assert git.Repo(workspace).commit("ratchet/s1/best").hexsha == Lineage(workspace, "s1").head(1)
    assert _leftovers(workspace, "s1", short_tmp, set()) == {
        "containers": 0, "volumes": 0, "worktrees": 0, "temp dirs": 0, "socket dirs": 0}


def test_second_signal_stops_the_tasks_in_flight_at_once_keeping_what_finished(
        workspace, suite, short_tmp):
    """A task whose agent sleeps for minutes is in flight when two tasks have finished: a
    first SIGTERM would wait for it; a second stops it at once (its container removed), the
    two finished tasks stay journaled, the stopped one is no verdict, and the run resumes."""
    from benchmark import load_suite

    tasks = load_suite(str(suite)).tasks
    slow = next(t for t in tasks if t.instance_id.startswith("isodate"))
    sleeper = "I will wait.\n\n```bash\nsleep 50\n```"
    script = Script(rules=[Rule(any_contains=slow.problem_statement.strip().splitlines()[0],
                                replies=[sleeper])] + list(demo_agent_script(tasks).rules))
    journal = workspace / "runs" / "t2" / "journal.jsonl"
    with ScriptedModelServer(script) as model:
        env = _env(short_tmp, OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="x")
        proc = _start(workspace, env, "run", "--suite", str(suite), "--generations", "0",
                      "--model", "scripted", "--run-id", "t2", "--workers", "2")
        _wait_for(lambda: _count(journal, "task_evaluated") >= 2, "the two quick tasks")
        assert _run_containers(workspace, "t2"), "the slow task should be in flight"
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        second = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - second
    assert proc.returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-2000:]
    assert "stopping the tasks in flight now" in stderr
    assert took < 60, f"the second signal took {took:.0f}s to stop a task that sleeps for minutes"
    events = Journal.read(journal)
    assert events[-1]["event"] == "run_stopped"
    kept = [e["task_id"] for e in events if e["event"] == "task_evaluated"]
    assert len(kept) == 2 and slow.instance_id not in kept
    assert _run_containers(workspace, "t2") == []
    assert not list(short_tmp.glob("ratchet-*"))


def test_kill_9_mid_generation_then_resume_leaves_nothing_behind(workspace, suite, short_tmp):
    """kill -9 while generation 1 is evaluated leaves containers (with the task images'
    anonymous volumes), the command's and the run's temp dirs (the gateway socket dirs in
    the run's) and the generation's worktree; `ratchet resume` takes the dead holder's lock
    over, sweeps them, and at its end none of them remains."""
    env = _env(short_tmp)
    journal = workspace / "runs" / "k9" / "journal.jsonl"
    proc = _start(workspace, env, "run", "--suite", str(suite), "--generations", "1", "--scripted",
                  "demo", "--run-id", "k9", "--workers", "2", "--acceptance", "strict")
    _wait_for(lambda: _count(journal, "proposal", generation=1) >= 1
              and any(c.status == "running" for c in _run_containers(workspace, "k9")),
              "generation 1 under evaluation")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    volumes = {m["Name"] for c in _run_containers(workspace, "k9")
               for m in c.attrs.get("Mounts", []) if m.get("Type") == "volume"}
    at_kill = _leftovers(workspace, "k9", short_tmp, volumes)
    print(f"left by kill -9: {at_kill}")
    assert at_kill["containers"] >= 1 and at_kill["volumes"] >= 2 and at_kill["worktrees"] == 1
    # the command's temp dir and its run's, beside it
    assert at_kill["temp dirs"] == 2 and at_kill["socket dirs"] >= 1

    resumed = subprocess.run([RATCHET, "resume", "k9"], cwd=workspace, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "took over the lock" in resumed.stderr and f"pid {proc.pid}" in resumed.stderr
    assert "cleaned what stopped runs left" in resumed.stderr
    after = _leftovers(workspace, "k9", short_tmp, volumes)
    print(f"left after resume: {after}")
    assert after == {"containers": 0, "volumes": 0, "worktrees": 0, "temp dirs": 0, "socket dirs": 0}
    state = replay(Journal.read(journal))
    assert {n: g.verdict for n, g in state.generations.items()} == {0: "accepted", 1: "accepted"}
    assert _evaluated_twice(workspace, "k9") == []


def test_gc_reports_then_removes_what_dead_processes_left(workspace, short_tmp, monkeypatch):
    """Planted leftovers (a dead maker's container with its volumes, an empty dangling
    volume, a recorded generation's worktree, a dead process's temp dir, a stale image) are
    listed by `ratchet gc --dry-run` and left in place, then removed by `ratchet gc`; a live
    process's container and temp dir, a named volume, an unrecorded generation's worktree and
    the current images stay."""
    client = docker.from_env()
    namespace = f"gctest{os.getpid()}"
    base = ImageBuilder().ensure_base()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = os.environ[_docker.OWNER_ENV]
    host = socket.gethostname()
    labels = {_docker.CONTAINER_LABEL: owner}
    # an image declaring a VOLUME, so its container makes an anonymous volume
    maker = client.containers.create(base, ["true"], labels=labels)
    stale = maker.commit(repository=f"{namespace}/task", tag="old",
                         changes=[f"LABEL {RECIPE_LABEL}=0.0.0", "VOLUME /wheels"])
    maker.commit(repository=f"{namespace}/task", tag="x-before-labels",
                 changes=["LABEL ratchet.instance_id=gc-x"])
    rebuilt = maker.commit(repository=f"{namespace}/task", tag="x-now", changes=[
        "LABEL ratchet.instance_id=gc-x", f"LABEL {RECIPE_LABEL}={RECIPES['task']}"])
    maker.remove(force=True, v=True)
    orphan = client.containers.create(stale.id, ["sleep", "infinity"], labels={
        **labels, _docker.PROCESS_LABEL: f"{host}:{dead.pid}:1", _docker.RUN_LABEL: "gone"})
    orphan.start()
    orphan_volumes = [m["Name"] for m in client.api.inspect_container(orphan.id)["Mounts"]]
    live = client.containers.create(base, ["sleep", "infinity"], labels={
        **labels, _docker.PROCESS_LABEL: processes.identity()})
    dangling = client.volumes.create()  # anonymous-looking (a 64-hex name), empty
    named = client.volumes.create(name=f"gc-keep-{os.getpid()}")
    lineage = Lineage(workspace, "old")
    lineage.start()
    for gen in (1, 2):
        lineage.worktree(gen, lineage.branch(0))
    lineage.commit(1, message="gen 1", trailers={}, allow_empty=True)
    journal = Journal(workspace / "runs" / "old" / "journal.jsonl")
    for gen, parent in ((0, None), (1, 0), (2, 0)):
        journal.append("generation_started", generation=gen, parent=parent)
    journal.append("generation_recorded", generation=0, sha=lineage.head(0))
    journal.append("generation_recorded", generation=1, sha=lineage.head(1))
    dead_dir = short_tmp / f"ratchet-run.gone-{dead.pid}-1"
    (dead_dir / "ratchet-gw-x").mkdir(parents=True)
    (dead_dir / "agent.py").write_text("x" * 5000)
    mine = short_tmp / f"ratchet-run.live-{os.getpid()}-{start_ticks(os.getpid())}"
    mine.mkdir()  # a live process's (this one's)
    env = _env(short_tmp, RATCHET_IMAGE_NAMESPACE=namespace, COLUMNS="400")
    try:
        report = subprocess.run([RATCHET, "gc", "--dry-run"], cwd=workspace, env=env,
                                capture_output=True, text=True)
        assert report.returncode == 0, report.stdout + report.stderr
        text = report.stdout
        for shown in (orphan.name, dangling.name[:12], "runs/old/worktrees/gen-0001",
                      str(dead_dir), f"{namespace}/task:old", f"{namespace}/task:x-before-labels",
                      "would remove"):
            assert shown in text, f"{shown} missing from:\n{text}"
        for kept in (live.name, named.name, "gen-0002", str(mine), f"{namespace}/task:x-now"):
            assert kept not in text
        assert orphan.id in {c.id for c in client.containers.list(all=True, ignore_removed=True)}
        assert dead_dir.exists() and lineage.worktree_path(1).exists()

        removed = subprocess.run([RATCHET, "gc"], cwd=workspace, env=env, capture_output=True, text=True)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        containers = {c.id for c in client.containers.list(all=True, ignore_removed=True)}
        volumes = {v.name for v in client.volumes.list()}
        assert orphan.id not in containers and live.id in containers
        assert not set(orphan_volumes) & volumes and dangling.name not in volumes
        assert named.name in volumes
        assert not dead_dir.exists() and mine.exists()
        assert not lineage.worktree_path(1).exists() and lineage.worktree_path(2).exists()
        assert git.Repo(workspace).commit("ratchet/old/gen-0001")  # the branch keeps the code
        assert [i.id for i in client.images.list(name=f"{namespace}/task")] == [rebuilt.id]
        assert client.images.list(name=base.split(":")[0])
    finally:
        for thing in (live, orphan):
            try:
                thing.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for volume in (named, dangling):
            try:
                volume.remove()
            except docker.errors.NotFound:
                pass
        for tag in ("old", "x-before-labels", "x-now"):
            try:
                client.images.remove(f"{namespace}/task:{tag}")
            except docker.errors.ImageNotFound:
                pass
