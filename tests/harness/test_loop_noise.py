"""The loop's statistics end to end: real sandboxes, real git, a stochastic scripted agent
model whose success rate depends on the agent's own lessons file (harness.models.stochastic_demo).
Short version (one seed, a three-task slice); perf/loop_noise.py runs many seeds."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from benchmark import Grader, ImageBuilder, load_suite
from harness.loop.attempts import attempt_index
from harness.cli.demo import demo_agent_script, demo_meta_script
from harness.models.gateway import OpenAIUpstream
from harness.loop.journal import Journal
from harness.loop.compose import build_controller
from harness.loop.settings import LoopSettings
from harness.models.scripted_model import ScriptedModelServer
from harness.models.stochastic_demo import stochastic_agent_script, stochastic_meta_script
from harness.loop.workspace import init_workspace
from tests.harness.test_loop import SLICE

import agent_seed

pytestmark = pytest.mark.docker


@pytest.fixture
def slice_tasks(tmp_path: Path):
    by_id = {t.instance_id: t for t in load_suite("quickstart").tasks}
    path = tmp_path / "slice.jsonl"
    path.write_text("".join(by_id[i].model_dump_json(exclude_none=True) + "\n" for i in SLICE))
    return path, load_suite(str(path)).tasks


def _events(ws: Path, run: str) -> list[dict]:
    return Journal.read(ws / "runs" / run / "journal.jsonl")


def test_a_real_improvement_is_accepted_and_a_no_op_rejected_under_noise(tmp_path, slice_tasks):
    """Tasks solved with p = 0.15; the improving lesson lifts that to 0.86, the no-op lesson
    changes nothing. Default rule (sign, run budget 0.05 over 2 generations), 4 attempts.
    Simulated with harness.loop.power, this design accepts the improvement with P = 0.89 and the
    no-op with P < 0.001; this seed is one draw of it. Also checked: the best's baseline
    is a fresh set of runs, never the draw that won the test."""
    suite, tasks = slice_tasks
    ws = init_workspace(tmp_path / "ws", seed=Path(agent_seed.__file__).parent)
    settings = LoopSettings(run="noise", suite=str(suite), generations=2, agent_model="scripted",
                            meta_model="scripted", workers=2, attempts=4)
    grader = Grader(ImageBuilder(), tmp_path / "grades")
    agent_script = stochastic_agent_script(tasks, [0.15] * len(tasks), effect=0.5, seed=3)
    with ScriptedModelServer(agent_script) as agent, ScriptedModelServer(stochastic_meta_script()) as meta:
        state = build_controller(ws, settings, tasks, grader, OpenAIUpstream(agent.base_url, "x"),
                                 OpenAIUpstream(meta.base_url, "x")).run()
    assert {n: g.verdict for n, g in state.generations.items()} == {
        0: "accepted", 1: "accepted", 2: "rejected"}, {n: g.reason for n, g in state.generations.items()}
    assert state.best == 1

    # the best's shown score is its fresh baseline (attempts 15000..), not its deciding runs
    events = _events(ws, "noise")
    tree1 = json.loads((ws / "runs/noise/gens/0001/metrics.json").read_text())["tree"]
    runs1 = {e["attempt"]: e for e in events if e["event"] == "task_evaluated" and e["tree_hash"] == tree1}
    fresh = [attempt_index(1, "baseline", j) for j in range(4)]
    deciding = [attempt_index(1, "decide", j) for j in range(4)]
    runs = [e for e in events if e["event"] == "task_evaluated" and e["tree_hash"] == tree1]
    fresh_resolved = sum(e["result"]["resolved"] for e in runs if e["attempt"] in fresh)
    drawn_resolved = sum(e["result"]["resolved"] for e in runs if e["attempt"] in deciding)
    assert len([e for e in runs if e["attempt"] in fresh]) == 12 and runs1
    decided1 = next(e for e in events if e["event"] == "decided" and e["generation"] == 1)
    assert decided1["score"]["resolved"] == fresh_resolved and decided1["score"]["runs"] == 12
    assert decided1["selection_score"]["resolved"] == drawn_resolved
    assert state.generations[1].score["resolved"] == fresh_resolved
    # gen 2 ran its own fresh attempts; nothing of gen 1's deciding draw was reused as them
    tree2 = json.loads((ws / "runs/noise/gens/0002/metrics.json").read_text())["tree"]
    gen2 = {e["attempt"] for e in events if e["event"] == "task_evaluated" and e["tree_hash"] == tree2}
    assert gen2 and gen2 <= {attempt_index(2, "decide", j) for j in range(4)}
    note = json.loads((ws / "runs/noise/gens/0001/metrics.json").read_text())
    assert note["decision"]["level"] == pytest.approx(0.025)
    assert "run budget 0.05 / 2 generations" in note["decision"]["correction"]


def test_several_proposals_are_recorded_screened_and_the_winner_tested_on_fresh_runs(tmp_path, slice_tasks):
    """--proposals 2: both candidates are kept on branches of their own, each screened on one
    run per deciding task; the chosen one is then tested on runs of its own (decide
    attempts), never on its screening runs."""
    suite, tasks = slice_tasks
    ws = init_workspace(tmp_path / "ws", seed=Path(agent_seed.__file__).parent)
    settings = LoopSettings(run="p2", suite=str(suite), generations=1, agent_model="scripted",
                            meta_model="scripted", workers=2, proposals=2, acceptance="strict")
    grader = Grader(ImageBuilder(), tmp_path / "grades")
    with ScriptedModelServer(demo_agent_script(tasks)) as agent, \
            ScriptedModelServer(demo_meta_script()) as meta:
        state = build_controller(ws, settings, tasks, grader, OpenAIUpstream(agent.base_url, "x"),
                                 OpenAIUpstream(meta.base_url, "x")).run()
    assert state.generations[1].verdict == "accepted"
    candidates = state.generations[1].candidates
    assert sorted(candidates) == [1, 2] and all(c["valid"] and c["sha"] for c in candidates.values())
    repo = git.Repo(ws)
    for index, c in candidates.items():
        assert repo.commit(f"ratchet/p2/candidates/gen-0001-p{index}").hexsha == c["sha"]
    note = json.loads((ws / "runs/p2/gens/0001/metrics.json").read_text())
    assert note["chosen"] == 1 and [c["screened_resolved"] for c in note["candidates"]] == [3, 3]
    chosen_tree = repo.commit(candidates[1]["sha"]).tree.hexsha
    assert repo.commit("ratchet/p2/gen-0001").tree.hexsha == chosen_tree
    events = _events(ws, "p2")
    attempts = {e["attempt"] for e in events if e["event"] == "task_evaluated" and e["generation"] == 1}
    screens = {attempt_index(1, "screen", 0, i) for i in (1, 2)}
    assert screens <= attempts and attempt_index(1, "decide", 0) in attempts
    decision = note["decision"]
    assert decision["tasks"] == 3 and decision["wins"] == 2  # 3 fresh pairs, not the screening runs
