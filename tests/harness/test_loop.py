"""The loop end to end: real Docker sandboxes, a real git workspace, real HTTP models
(scripted), the real CLI. A three-task slice of quickstart keeps it quick: two toolz tasks
(the demo's agent model fences them ```sh, which the seed agent cannot read) and one
isodate task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import git
import pytest

from benchmark import Grader, ImageBuilder, InfraError, load_suite
from harness.cli.demo import demo_agent_script
from harness.models.gateway import OpenAIUpstream
from harness.loop.journal import Journal, replay
from harness.loop.lineage import Lineage
from harness.loop.compose import build_controller
from harness.loop.controller import Controller
from harness.loop.settings import LoopSettings
from harness.models.scripted_model import ScriptedModelServer
from tests.harness.conftest import new_workspace, quickstart_slice

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))
SLICE = ("toolz__toolz-1.2.0__dissoc-many-keys", "isodate__isodate-0.7.2__december-month-carry",
         "toolz__toolz-1.2.0__get-in-non-subscriptable")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    return quickstart_slice(tmp_path, SLICE)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return new_workspace(tmp_path / "ws")


def _ratchet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd,
                          env={**env, "COLUMNS": "200"})


def _state(workspace: Path, run: str):
    return replay(Journal.read(workspace / "runs" / run / "journal.jsonl"))


def _evaluated_twice(workspace: Path, run: str) -> list:
    events = Journal.read(workspace / "runs" / run / "journal.jsonl")
    counts = Counter((e["tree_hash"], e["task_id"], e["attempt"]) for e in events
                     if e["event"] == "task_evaluated")
    return [key for key, n in counts.items() if n > 1]


def test_demo_accepts_a_real_fix_and_rejects_a_harmful_change(workspace, suite):
    """Under the default rule (the sign test at a run budget of 0.05: 0.025 per generation
    in a run of 2) the fix must win enough pairs: on this slice 2 tasks flip, so 2 attempts
    give 4 wins 0 losses (p = 1/16, not enough) and 3 give 6 wins 0 losses (p = 1/64)."""
    out = _ratchet("run", "--suite", str(suite), "--generations", "2", "--scripted", "demo",
                   "--attempts", "3", "--run-id", "t1", cwd=workspace)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SCRIPTED DEMO" in out.stdout
    state = _state(workspace, "t1")
    verdicts = {n: g.verdict for n, g in state.generations.items()}
    assert verdicts == {0: "accepted", 1: "accepted", 2: "rejected"}
    assert state.generations[0].score["resolved"] == 3 and state.generations[1].score["resolved"] == 9
    assert state.best == 1 and state.ended and state.end_reason.startswith("run_finished")
    gen1_note = json.loads((workspace / "runs/t1/gens/0001/metrics.json").read_text())
    assert gen1_note["decision"]["wins"] == 6 and gen1_note["decision"]["losses"] == 0
    assert gen1_note["decision"]["level"] == pytest.approx(0.025)
    # the harmful change loses the first look's pairs and is stopped there
    assert gen1_note["score"]["runs"] == 9 and state.generations[2].score["runs"] == 3

    repo = git.Repo(workspace)
    lineage = Lineage(workspace, "t1")
    assert repo.commit("ratchet/t1/best").hexsha == lineage.head(1)
    gen1 = repo.commit("ratchet/t1/gen-0001")
    assert gen1.parents[0].hexsha == lineage.head(0)
    assert "Ratchet-Verdict: accepted" in gen1.message and "Ratchet-Score: 9/9" in gen1.message
    assert "```sh" in gen1.message  # the diagnosis is the commit message
    gen2 = repo.commit("ratchet/t1/gen-0002")
    assert gen2.parents[0] == gen1 and "Ratchet-Verdict: rejected" in gen2.message
    assert lineage.get_note(gen1.hexsha)["verdict"] == "accepted"
    assert json.loads((workspace / "runs/t1/gens/0001/metrics.json").read_text())["score"]["resolved"] == 9
    # plain git reads the lineage; the user's checkout is untouched
    diff = repo.git.diff("ratchet/t1/gen-0000", "ratchet/t1/gen-0001", "--", "agent_seed/")
    assert "(?:bash|sh|shell)" in diff
    assert repo.head.commit.message.startswith("ratchet: seed agent") and not repo.is_dirty()

    log = _ratchet("log", "t1", cwd=workspace)
    assert log.returncode == 0 and "accepted" in log.stdout and "rejected" in log.stdout
    status = _ratchet("status", "t1", cwd=workspace)
    assert "best generation 1" in status.stdout
    assert "(?:bash|sh|shell)" in _ratchet("diff", "t1", "0", "1", cwd=workspace).stdout
    assert "t1" in _ratchet("runs", cwd=workspace).stdout

    # a new line of descent from generation 1
    branched = _ratchet("resume", "t1", "--from", "1", "--generations", "1", cwd=workspace)
    assert branched.returncode == 0, branched.stdout[-3000:] + branched.stderr[-3000:]
    assert repo.commit("ratchet/t1.from-0001/gen-0000") == gen1
    child = _state(workspace, "t1.from-0001")
    assert child.generations[0].score["resolved"] == 9 and child.generations[1].verdict == "rejected"


def test_kill_during_evaluation_then_resume_loses_and_repeats_nothing(workspace, suite):
    """kill -9 while tasks run; `ratchet resume` finishes with the same lineage as an
    uninterrupted run, and no (agent, task) pair is evaluated twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen([RATCHET, "run", "--suite", str(suite), "--generations", "1",
                             "--scripted", "demo", "--run-id", "k1", "--workers", "1",
                             "--acceptance", "strict"],
                            cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    journal = workspace / "runs" / "k1" / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"task_evaluated"') >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _state(workspace, "k1")
    assert 2 <= len(before.evaluations) < 6 and not before.ended

    out = _ratchet("resume", "k1", cwd=workspace)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after = _state(workspace, "k1")
    assert {n: g.verdict for n, g in after.generations.items()} == {0: "accepted", 1: "accepted"}
    assert set(before.evaluations) <= set(after.evaluations)
    assert _evaluated_twice(workspace, "k1") == []
    assert git.Repo(workspace).commit("ratchet/k1/best").hexsha == Lineage(workspace, "k1").head(1)


def test_invalid_proposal_and_spent_budget(workspace, suite, tmp_path, monkeypatch):
    """A meta answer that is never an edit is recorded as invalid and the loop goes on; a
    spent budget stops the run cleanly and a resume with more budget finishes it."""
    tasks = load_suite(str(suite)).tasks
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"priced": [100.0, 100.0]}))  # $0.11 per scripted agent call
    monkeypatch.setenv("RATCHET_PRICES", str(prices))
    grader = Grader(ImageBuilder(), tmp_path / "grades")
    with ScriptedModelServer(demo_agent_script(tasks)) as agent_model, \
            ScriptedModelServer({"default": "I would rather not change anything."}) as meta_model:
        def controller(run: str, budget: float | None, generations: int = 1) -> Controller:
            settings = LoopSettings(run=run, suite=str(suite), generations=generations,
                                    agent_model="priced", meta_model="scripted", budget_usd=budget,
                                    workers=1, max_proposal_attempts=2)
            return build_controller(workspace, settings, tasks, grader,
                                    OpenAIUpstream(agent_model.base_url, "x"),
                                    OpenAIUpstream(meta_model.base_url, "x"))

        state = controller("inv", None).run()
        assert state.generations[1].proposal_valid is False
        assert "the answer holds no edit" in state.generations[1].proposal_reason
        assert state.generations[1].verdict == "rejected" and state.best == 0
        assert "Ratchet-Verdict: invalid" in git.Repo(workspace).commit("ratchet/inv/gen-0001").message

        spent = controller("money", 0.5).run()  # gen 0 alone needs ~ 3 tasks x 3+ calls x $0.11
        assert spent.ended and spent.end_reason.startswith("budget_exhausted")
        assert 0 not in spent.generations or not spent.generations[0].recorded
        done_before = set(spent.evaluations)
        finished = controller("money", 100.0).run()
        assert finished.end_reason.startswith("run_finished")
        assert done_before <= set(finished.evaluations)
        assert _evaluated_twice(workspace, "money") == []


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(workspace, suite):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen([RATCHET, "run", "--suite", str(suite), "--generations", "1",
                             "--scripted", "demo", "--run-id", "c1", "--workers", "1"],
                            cwd=workspace, env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    journal = workspace / "runs" / "c1" / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if journal.exists() and '"task_evaluated"' in journal.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]  # stopped by SIGINT: 128 + 2
    assert "stopping after the tasks in flight" in stderr
    assert "ratchet resume c1" in stdout
    events = Journal.read(journal)
    assert events[-1]["event"] == "run_stopped"
    state = replay(events)
    assert not state.generations[0].recorded and len(state.evaluations) < 3
    assert _evaluated_twice(workspace, "c1") == []


def test_self_proposer_generation(workspace, suite, tmp_path):
    """`proposer="self"`: the parent agent edits its own source in a sandbox; the change is
    checked, committed as a generation and judged like any other (a new lesson changes no
    outcome here, so it is a tie: rejected)."""
    from harness.models.scripted_model import Rule, Script

    tasks = load_suite(str(suite)).tasks
    lesson = "- Read the failing test's assertion before editing code."
    improve = Rule(any_contains="Improve this coding agent.", replies=[
        f"Adding a lesson.\n\n```bash\ncat <<'EOF' >> agent_seed/lessons.md\n{lesson}\nEOF\n```",
        "Saved the lesson.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"])
    script = demo_agent_script(tasks)
    grader = Grader(ImageBuilder(), tmp_path / "grades")
    with ScriptedModelServer(Script(rules=[improve, *script.rules])) as agent_model:
        settings = LoopSettings(run="self1", suite=str(suite), generations=1, agent_model="scripted",
                                meta_model="unused", proposer="self", workers=2)
        upstream = OpenAIUpstream(agent_model.base_url, "x")
        state = build_controller(workspace, settings, tasks, grader, upstream, upstream).run()
    assert state.generations[1].proposal_valid is True
    assert state.generations[1].verdict == "rejected"
    repo = git.Repo(workspace)
    diff = repo.git.diff("ratchet/self1/gen-0000", "ratchet/self1/gen-0001", "--", "agent_seed/")
    assert lesson in diff and "agent_seed/lessons.md" in diff


class _FlakyDaemon:
    """The real environment, except that the daemon fails `times` times for one task."""

    def __init__(self, inner, task_id: str, times: int):
        self.inner, self.task_id, self.times, self.failures = inner, task_id, times, 0

    def run_agent(self, task, agent_dir, **options):
        if task.instance_id == self.task_id and self.failures < self.times:
            self.failures += 1
            raise InfraError("the Docker daemon hiccuped (injected)")
        return self.inner.run_agent(task, agent_dir, **options)


def test_infrastructure_errors_are_retried_and_never_decide_a_generation(workspace, suite, tmp_path):
    """An infrastructure error is not a verdict: the task runs once more; if it still has
    none, the run stops before deciding on part of the tasks, and a resume finishes it."""
    tasks = load_suite(str(suite)).tasks
    grader = Grader(ImageBuilder(), tmp_path / "grades")
    said: list[str] = []
    with ScriptedModelServer(demo_agent_script(tasks)) as model:
        def controller(run: str, times: int) -> Controller:
            settings = LoopSettings(run=run, suite=str(suite), generations=0, agent_model="scripted",
                                    meta_model="scripted", workers=2)
            made = build_controller(workspace, settings, tasks, grader, OpenAIUpstream(model.base_url, "x"),
                                    OpenAIUpstream(model.base_url, "x"), on_event=said.append)
            made.evaluation.runner.environment = _FlakyDaemon(made.evaluation.runner.environment, SLICE[1], times)
            return made

        once = controller("once", 1).run()
        assert once.end_reason.startswith("run_finished") and once.generations[0].recorded
        assert "gen 0: 1 task(s) had infrastructure errors; running them once more" in said
        assert len(once.evaluations) == 3

        stuck = controller("stuck", 5).run()
        assert stuck.ended and "infrastructure errors: 1 task(s) of gen 0 have no verdict" in stuck.end_reason
        assert "the Docker daemon hiccuped" in stuck.end_reason
        assert 0 not in stuck.generations or not stuck.generations[0].recorded
        assert len(stuck.evaluations) == 2
        resumed = controller("stuck", 0).run()
        assert resumed.end_reason.startswith("run_finished") and len(resumed.evaluations) == 3
        assert resumed.generations[0].score["tasks"] == 3
        assert _evaluated_twice(workspace, "stuck") == []
