"""Held-out splits: which tasks the proposer studies, which decide, which only report.

The invariant these tests guard: the proposer never sees anything of the deciding tasks,
and where a run decides on the tasks it studies it never sees the hidden tests' source or
the grader's failure messages. They check the RENDERED prompt: what the meta model was sent
over HTTP, and the self proposer's evidence and task files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent_seed
from benchmark import Grader, ImageBuilder, load_suite
from harness.propose.evidence import collect_evidence
from harness.models.gateway import OpenAIUpstream
from harness.loop.compose import build_controller
from harness.loop.controller import Controller
from harness.loop.settings import LoopSettings
from harness.models.scripted_model import Script, ScriptedModelServer
from harness.propose.self import SelfProposer, render_evidence
from harness.loop.splits import (SplitError, check_unchanged, plan_splits, sign_test_power, split_of,
                            start_of_run_power)
from harness.loop.workspace import init_workspace

RATCHET = str(Path(sys.executable).with_name("ratchet"))
FORGED = load_suite("forged").tasks
N = len(FORGED)
N_TRAIN = sum(split_of(t) == "train" for t in FORGED)
N_HELDOUT = sum(split_of(t) == "heldout" for t in FORGED)


def _ids(tasks) -> list[str]:
    return [t.instance_id for t in tasks]


# --- planning (pure) -------------------------------------------------------------------------

def test_study_and_decide_follow_the_split_field():
    plan = plan_splits(FORGED, study="train", decide="heldout")
    assert {split_of(t) for t in plan.study} == {"train"} and len(plan.study) == N_TRAIN
    assert {split_of(t) for t in plan.decide} == {"heldout"} and len(plan.decide) == N_HELDOUT
    assert N_TRAIN + N_HELDOUT == N
    assert not plan.studies_deciding and not plan.report
    assert plan_splits(FORGED, decide="heldout") == plan  # the rest is studied
    assert plan_splits(FORGED, study="train") == plan  # the rest decides
    assert f"study train ({N_TRAIN} tasks), decide on heldout ({N_HELDOUT} tasks)" in plan.how


def test_no_split_studies_and_decides_on_the_same_tasks():
    plan = plan_splits(FORGED)
    assert _ids(plan.study) == _ids(plan.decide) == _ids(FORGED) and plan.studies_deciding


def test_the_report_split_never_studies_decides_or_runs_each_generation():
    plan = plan_splits(FORGED, report="heldout")
    heldout = {t.instance_id for t in FORGED if split_of(t) == "heldout"}
    assert {t.instance_id for t in plan.report} == heldout
    for part in (plan.study, plan.decide, plan.run_each_generation):
        assert not heldout & set(_ids(part))
    assert f"report-only: heldout ({N_HELDOUT} tasks)" in plan.how


def test_holdout_is_a_seeded_draw_not_the_last_tasks_in_file_order():
    """--holdout used to take the last N rows of the file (on forged, 16 of 17 of them
    labelled train). Now: a shuffle seeded with the run's seed, of the sorted ids."""
    plan = plan_splits(FORGED, holdout=17, seed=0)
    assert len(plan.decide) == 17 and len(plan.study) == N - 17 and not plan.studies_deciding
    assert set(_ids(plan.decide)) != set(_ids(FORGED[-17:]))
    again = plan_splits(list(reversed(FORGED)), holdout=17, seed=0)
    assert set(_ids(again.decide)) == set(_ids(plan.decide))  # file order does not matter
    assert set(_ids(plan_splits(FORGED, holdout=17, seed=1).decide)) != set(_ids(plan.decide))
    assert _ids(plan.decide) == [i for i in _ids(FORGED) if i in set(_ids(plan.decide))]


@pytest.mark.parametrize("options, names", [
    ({"study": "bogus"}, ["'bogus'", f"heldout ({N_HELDOUT} tasks)", f"train ({N_TRAIN} tasks)"]),
    ({"decide": "heldout,nope"}, ["'nope'", f"heldout ({N_HELDOUT} tasks)", f"train ({N_TRAIN} tasks)"]),
    ({"report": "nope"}, ["'nope'", f"heldout ({N_HELDOUT} tasks)"]),
    ({"study": "train", "decide": "train"}, ["overlap", "train"]),
    ({"study": ""}, ["--study ''", "empty split"]),
    ({"decide": "heldout,"}, ["--decide 'heldout,'", "empty split"]),
    ({"study": "train,heldout"}, ["'train,heldout'", "none to decide"]),
    ({"decide": "heldout", "report": "heldout"}, ["--decide and --report-split", "heldout"]),
    ({"report": "train,heldout"}, ["one split name"]),
    ({"holdout": -1}, ["--holdout -1", f"0 (off) or 1 to {N - 1}"]),
    ({"holdout": N}, [f"--holdout {N}", f"0 (off) or 1 to {N - 1}"]),
    ({"holdout": N_TRAIN, "report": "heldout"}, [f"--holdout {N_TRAIN}", f"1 to {N_TRAIN - 1}"]),
    ({"holdout": 3, "study": "train"}, ["--holdout 3", "--study/--decide"]),
])
def test_each_bad_split_value_is_one_clear_error(options, names):
    with pytest.raises(SplitError) as caught:
        plan_splits(FORGED, **options)
    for name in names:
        assert name in str(caught.value)


def test_a_suite_without_splits_says_so_and_points_at_holdout():
    quickstart = load_suite("quickstart").tasks
    with pytest.raises(SplitError, match=r"no `split` field \(use --holdout N"):
        plan_splits(quickstart, decide="heldout")
    assert len(plan_splits(quickstart, holdout=3).decide) == 3


def test_sign_test_power_grows_with_tasks_and_effect():
    assert sign_test_power(9, 0.10, alpha=0.05) < sign_test_power(100, 0.10, alpha=0.05)
    assert sign_test_power(100, 0.05, alpha=0.05) < sign_test_power(100, 0.10, alpha=0.05)
    assert sign_test_power(100, 0.0, alpha=0.05) <= 0.05  # no effect: at most the error rate
    assert 0.25 < sign_test_power(300, 0.10, alpha=0.05 / 30) < 0.33  # exact: 0.288


def test_the_start_of_run_line_states_power_tasks_and_attempts():
    settings = LoopSettings(run="r", suite="forged", generations=30, agent_model="m", meta_model="m")
    line = start_of_run_power(settings, 17)
    assert line.startswith("power to accept a true +0.05 / +0.10 change: ")
    assert "17 deciding tasks x 1 attempt(s)" in line
    settings.attempts = 3  # part of the settings once repeated attempts exist
    assert "17 deciding tasks x 3 attempt(s)" in start_of_run_power(settings, 17)


def test_a_resumed_run_must_split_its_tasks_as_it_started():
    started = plan_splits(FORGED, holdout=17, seed=0)
    check_unchanged(started, started.as_dict())
    with pytest.raises(SplitError, match=r"decide, study tasks differ|study, decide tasks differ"):
        check_unchanged(plan_splits(FORGED, holdout=17, seed=1), started.as_dict())


# --- the CLI ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("ws") / "ws", seed=Path(agent_seed.__file__).parent)


@pytest.mark.parametrize("args, names", [
    (["--study", "bogus"], ["'bogus'", f"train ({N_TRAIN} tasks)"]),
    (["--study", "train", "--decide", "train"], ["overlap"]),
    (["--decide", ","], ["empty split"]),
    (["--holdout", "-1"], ["--holdout -1"]),
    (["--holdout", str(N)], [f"--holdout {N}"]),
    (["--report-split", "heldout", "--decide", "heldout"], ["--report-split"]),
])
def test_bad_split_options_exit_2_with_one_message_and_write_nothing(workspace, args, names):
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if ".git" not in p.parts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([RATCHET, "run", "--suite", "forged", "--generations", "1", "--run-id",
                          "bad", "--scripted", "demo", *args], cwd=workspace, capture_output=True,
                         text=True, env={**env, "COLUMNS": "300"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("error:") == 1 and "Traceback" not in out.stderr + out.stdout
    for name in names:
        assert name in out.stderr
    after = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if ".git" not in p.parts)
    assert after == before and not (workspace / "runs" / "bad").exists()


# --- what the proposer is shown --------------------------------------------------------------

def _task_files(tmp: Path, task, resolved: bool) -> dict:
    """One task's result as the loop journals it, with its trajectory, grader's log and
    report.json on disk, each carrying text unique to the task."""
    where = tmp / "results" / task.instance_id
    where.mkdir(parents=True)
    trajectory = where / "trajectory.jsonl"
    trajectory.write_text(json.dumps({
        "request": {"messages": [{"role": "system", "content": "You fix bugs."},
                                 {"role": "user", "content": task.problem_statement},
                                 {"role": "user", "content": f"TRAJ-OBS-{task.instance_id}"}]},
        "response": {"choices": [{"message": {"role": "assistant",
                                              "content": f"I tried TRAJ-ACT-{task.instance_id}"}}]},
    }) + "\n")
    test = task.FAIL_TO_PASS[0]
    log = where / "eval.log"
    log.write_text(
        "+ git apply -v - <<'EOF_114329324912'\n>>>>> Start Test Output\n"
        "=================================== FAILURES ===================================\n"
        f"_____ {test} _____\n\n    def test_hidden():\n"
        f">       assert HIDDEN_SRC_{task.instance_id}() == 4\n"
        f"E       AssertionError: HIDDEN_MSG_{task.instance_id} assert 5 == 4\n\n"
        f"tests/test_hidden.py:12: AssertionError\n=========== short test summary info ===========\n"
        f"FAILED {test} - AssertionError: HIDDEN_MSG_{task.instance_id}\n"
        "========================= 1 failed in 0.10s =========================\n"
        ">>>>> End Test Output\n")
    (where / "report.json").write_text(json.dumps({task.instance_id: {
        "resolved": resolved, "tests_status": {
            "FAIL_TO_PASS": {"success": [], "failure": list(task.FAIL_TO_PASS)},
            "PASS_TO_PASS": {"success": list(task.PASS_TO_PASS)[:3], "failure": []}}}}))
    return {"resolved": resolved, "trajectory": str(trajectory), "grade_log": str(log)}


def _leaks(text: str, task) -> list[str]:
    """Pieces of ``task`` found in ``text``."""
    found = [piece for piece in (task.instance_id, task.problem_statement.strip(),
                                 f"TRAJ-OBS-{task.instance_id}", f"TRAJ-ACT-{task.instance_id}",
                                 f"HIDDEN_SRC_{task.instance_id}", f"HIDDEN_MSG_{task.instance_id}")
             if piece in text]
    return found


def _proposer_prompts(tmp: Path, tasks, **split_options) -> tuple[list[str], Controller]:
    """Run the loop's proposal step of generation 1 for real (the meta model is the scripted
    server, over HTTP through the gateway), after generation 0's results on every task are
    in the journal's state; returns what the meta model received and the self proposer's
    evidence and task files."""
    workspace = init_workspace(tmp / "ws", seed=Path(agent_seed.__file__).parent)
    suite = tmp / "suite.jsonl"
    suite.write_text("".join(t.model_dump_json(exclude_none=True) + "\n" for t in tasks))
    settings = LoopSettings(run="p", suite=str(suite), generations=1, agent_model="scripted",
                            meta_model="scripted", scripted="demo", max_proposal_attempts=1,
                            **split_options)
    with ScriptedModelServer(Script(default="no edit here")) as meta:
        controller = build_controller(workspace, settings, tasks, Grader(ImageBuilder(), tmp / "grades"),
                                      OpenAIUpstream(meta.base_url, "x"), OpenAIUpstream(meta.base_url, "x"))
        try:
            controller.lineage.start("HEAD")
            tree = controller.workload.agent(0).tree_hash
            for task in tasks:
                controller.state.evaluations[(tree, task.instance_id, 0)] = _task_files(
                    tmp, task, resolved=False)
            worktree = controller.lineage.worktree(1, controller.lineage.branch(0))
            result, _ = controller.propose.propose(1, 0, worktree)
            evidence = controller.propose.evidence(0)
        finally:
            controller.close()
        sent = [m["content"] for request in meta.requests for m in request["messages"]]
    assert not result.valid and len(sent) == 1  # one prompt, one (unusable) answer
    self_files = [render_evidence(evidence)]
    proposer = SelfProposer(None, None, tasks[0])  # type: ignore[arg-type]
    repo = proposer.build_repo(worktree, evidence, tmp / "self-repo")
    self_files += [(repo / ".ratchet" / name).read_text() for name in ("evidence.md", "TASK.md")]
    return sent + self_files, controller


PICK = [t for t in FORGED if t.instance_id.startswith("cachetools")]
"""The cachetools tasks (21: 10 train, 11 heldout)."""


def test_a_deciding_split_never_reaches_the_proposer(tmp_path):
    prompts, controller = _proposer_prompts(tmp_path, PICK, study="train", decide="heldout")
    decide = [t for t in PICK if split_of(t) == "heldout"]
    assert len(decide) == 11 and {t.instance_id for t in controller.accept_on} == {t.instance_id for t in decide}
    study_tests = {test for t in controller.study for test in t.FAIL_TO_PASS + t.PASS_TO_PASS}
    for text in prompts:
        for task in decide:
            assert _leaks(text, task) == [], task.instance_id
            assert not [t for t in task.FAIL_TO_PASS if t not in study_tests and t in text]
    # the study tasks are shown, with their grader's log (they never decide)
    meta = prompts[0]
    shown = [t for t in controller.study if t.instance_id in meta]
    assert shown and f"HIDDEN_MSG_{shown[0].instance_id}" in meta
    assert f"0 of {len(PICK) - len(decide)} tasks resolved" in meta  # the study tasks only
    # the attack the split stops: evidence of every task shows the deciding ones
    everything = render_evidence(collect_evidence(
        {t.instance_id: _task_files(tmp_path / "again", t, False) for t in decide},
        decide, grader_log=True, max_tokens=6000))
    assert _leaks(everything, decide[0])


def test_with_no_split_the_proposer_sees_test_ids_never_hidden_test_source(tmp_path):
    """quickstart's default: the run studies the tasks that decide. The evidence keeps the
    agent's own conversation and which hidden tests failed, and drops the grader's log,
    whose pytest failure sections quote the hidden tests' source and assertion messages."""
    tasks = PICK[:4]
    prompts, controller = _proposer_prompts(tmp_path, tasks)
    assert controller.splits.studies_deciding
    meta = prompts[0]
    for text in prompts:
        for task in tasks:
            assert f"HIDDEN_SRC_{task.instance_id}" not in text
            assert f"HIDDEN_MSG_{task.instance_id}" not in text
            assert "def test_hidden" not in text and "AssertionError: HIDDEN" not in text
    for task in tasks:  # what it may see: ids, pass/fail, its own trajectory
        assert task.instance_id in meta and f"TRAJ-ACT-{task.instance_id}" in meta
        assert f"FAILED {task.FAIL_TO_PASS[0]}" in meta
    assert f"hidden tests: FAIL_TO_PASS 0 of {len(tasks[0].FAIL_TO_PASS)} passed" in meta
    # the attack: the same results with the grader's log shown leak the hidden source
    leaky = render_evidence(collect_evidence(
        {t.instance_id: _task_files(tmp_path / "again", t, False) for t in tasks},
        tasks, grader_log=True, max_tokens=6000))
    assert f"HIDDEN_SRC_{tasks[0].instance_id}" in leaky


def test_resume_refuses_a_run_whose_split_changed(workspace):
    """The run started deciding on one held-out draw; resumed with another (here: a changed
    seed in its settings), it would decide on tasks it studied. One error, exit 2."""
    run = workspace / "runs" / "moved"
    run.mkdir(parents=True)
    LoopSettings(run="moved", suite="forged", generations=1, agent_model="scripted",
                 meta_model="scripted", scripted="demo", holdout=17, seed=1).save(run / "settings.json")
    (run / "splits.json").write_text(json.dumps(plan_splits(FORGED, holdout=17, seed=0).as_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([RATCHET, "resume", "moved"], cwd=workspace, capture_output=True,
                         text=True, env={**env, "COLUMNS": "300"})
    assert out.returncode == 2 and out.stderr.count("error:") == 1, out.stdout + out.stderr
    assert "differ from those it started with" in out.stderr
    assert sorted(p.name for p in run.iterdir()) == ["settings.json", "splits.json"]


SPLIT_SLICE = {"toolz__toolz-1.2.0__dissoc-many-keys": "train",
               "isodate__isodate-0.7.2__december-month-carry": "train",
               "toolz__toolz-1.2.0__get-in-non-subscriptable": "heldout",
               "toolz__toolz-1.2.0__update-in-missing-key-default": "final"}


@pytest.mark.docker
def test_a_real_run_decides_on_its_held_out_split_and_reports_the_final_one(tmp_path):
    """The scripted demo on 4 quickstart tasks given splits: the proposer studies `train`,
    acceptance is decided on `heldout`, `final` runs only for the best. The demo's fix is
    still found (the meta model matches the agent's source) and accepted on the held-out
    task; the proposer's prompts never hold a held-out or final task."""
    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    suite = tmp_path / "split.jsonl"
    suite.write_text("".join(json.dumps({**json.loads(tasks[i].model_dump_json(exclude_none=True)),
                                         "split": split}) + "\n" for i, split in SPLIT_SLICE.items()))
    workspace = init_workspace(tmp_path / "ws", seed=Path(agent_seed.__file__).parent)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}, "COLUMNS": "200"}
    out = subprocess.run([RATCHET, "run", "--suite", str(suite), "--generations", "2", "--scripted",
                          "demo", "--run-id", "s1", "--decide", "heldout", "--report-split", "final",
                          # one deciding task: no sign test can accept on it; this checks the
                          # splits' plumbing, with the scripted (deterministic) models
                          "--acceptance", "strict"],
                         cwd=workspace, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "tasks: study train (2 tasks), decide on heldout (1 tasks); report-only: final (1 tasks)" in out.stdout
    assert "power to accept a true +0.05 / +0.10 change" in out.stdout
    run = workspace / "runs" / "s1"
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    verdicts = {e["generation"]: e["verdict"] for e in events if e["event"] == "decided"}
    assert verdicts == {0: "accepted", 1: "accepted", 2: "rejected"}
    final = "toolz__toolz-1.2.0__update-in-missing-key-default"
    assert sorted(e["generation"] for e in events
                  if e["event"] == "task_evaluated" and e["task_id"] == final) == [0, 1]
    metrics = [json.loads((run / "gens" / f"{n:04d}" / "metrics.json").read_text()) for n in range(3)]
    assert [m.get("report_split", {}).get("resolved") for m in metrics] == [0, 1, None]
    assert metrics[1]["score"] == {**metrics[1]["score"], "resolved": 1, "tasks": 1}
    assert [e.get("selection_seed") for e in events if e["event"] == "generation_started"][1:] == ["0:1", "0:2"]
    for n in (1, 2):
        prompt = json.dumps(json.loads((run / "gens" / f"{n:04d}" / "proposal.json").read_text())["messages"])
        for task_id, split in SPLIT_SLICE.items():
            if split != "train":
                assert task_id not in prompt, (n, task_id)
                assert tasks[task_id].problem_statement.strip().splitlines()[0] not in prompt
    first = json.loads((run / "gens" / "0001" / "proposal.json").read_text())["messages"][0]["content"]
    assert "toolz__toolz-1.2.0__dissoc-many-keys" in first and "```sh" in first  # the studied failure
    status = subprocess.run([RATCHET, "status", "s1"], cwd=workspace, capture_output=True, text=True, env=env)
    assert "decide on heldout (1 tasks)" in status.stdout
    report = subprocess.run([RATCHET, "report", "s1"], cwd=workspace, capture_output=True, text=True, env=env)
    assert report.returncode == 0, report.stderr
    assert (run / "report.html").read_text().count('data-mark="heldout"') == 2
