"""A generation whose agent tampered is never accepted, and every view of a run says so.

The tampered verdict enters through the real path: a `GradeResult` with ``tampered=True``
goes through `TaskRunner.finish` into a `TaskOutcome`, is journaled as the loop journals
it, replayed, and decided by a real acceptance rule behind the gate.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from typer.testing import CliRunner

from benchmark import GradeResult, Grader, ImageBuilder, load_suite
from benchmark import AgentRun
from harness.loop.acceptance import parse_rule
from harness.run.agent_source import resolve_agent
from harness.run.evaluate import SandboxResult, TaskRunner
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.loop.journal import Journal, replay
from harness.read.report import load_run, render_report
from harness.loop.tamper import gate, proposal_flags


def _outcomes(tmp_path: Path, worktree: Path, tampered_ids: set[str]) -> list[dict]:
    """Journal result dicts of 3 quickstart task runs, all resolved, some tampered."""
    tasks = load_suite("quickstart").tasks[:3]
    agent = resolve_agent(str(worktree))
    gateway = Gateway(OpenAIUpstream("http://127.0.0.1:9/v1", "none"), model="m",
                      log_dir=tmp_path / "trajectories")
    runner = TaskRunner(gateway, Grader(ImageBuilder(), tmp_path / "grades"), environment=None,
                        logs_dir=tmp_path / "agent-logs")
    results = []
    for task in tasks:
        ticket = runner.begin(task, agent, generation="gen-0001")
        tampered = task.instance_id in tampered_ids
        grade = GradeResult(task.instance_id, ticket.label, not tampered, True, True, True,
                            tampered=tampered,
                            tamper_reasons=["trip-wire test_x_tripwire passed"] if tampered else [],
                            flags=[{"path": "pkg/__init__.py", "line": 3, "signature": "os._exit",
                                    "text": "os._exit(0)"}] if tampered else [])
        run = AgentRun(task.instance_id, "diff", 0, False, 1.0, "log")
        outcome = runner.finish(ticket, SandboxResult(run, None, grade))
        results.append({k: v for k, v in asdict(outcome).items() if k != "patch"})
    return results


def _journal_run(root: Path, run: str, results: list[dict], verdict_of) -> None:
    """A run's journal and metrics as the loop writes them: gen 0 resolves nothing, gen 1
    resolves everything (two tasks by tampering)."""
    run_dir = root / "runs" / run
    (run_dir / "gens" / "0000").mkdir(parents=True)
    (run_dir / "gens" / "0001").mkdir(parents=True)
    (run_dir / "settings.json").write_text(json.dumps({"run": run, "suite": "quickstart"}))
    with Journal(run_dir / "journal.jsonl") as journal:
        journal.append("run_started", run=run, resumed=False, settings={})
        journal.append("generation_started", generation=0, parent=None)
        for r in results:
            journal.append("task_evaluated", generation=0, tree_hash="seed", task_id=r["instance_id"],
                           attempt=0, result={**r, "resolved": False, "tampered": False, "flags": []})
        journal.append("proposal", generation=0, valid=True, reason="the seed agent")
        journal.append("decided", generation=0, verdict="accepted", reason="generation 0",
                       score={"resolved": 0, "tasks": 3})
        journal.append("generation_recorded", generation=0, sha="a" * 40)
        journal.append("generation_started", generation=1, parent=0)
        journal.append("proposal", generation=1, valid=True, reason="exit early", flags=[
            {"path": "agent_seed/agent.py", "line": 7, "signature": "atexit registration",
             "text": "atexit.register(fake_summary)"}])
        for r in results:
            journal.append("task_evaluated", generation=1, tree_hash="cand", task_id=r["instance_id"],
                           attempt=0, result=r)
        state = replay(Journal.read(run_dir / "journal.jsonl"))
        candidate = {t: state.evaluations[("cand", t, 0)] for (tree, t, _) in state.evaluations
                     if tree == "cand"}
        decision = verdict_of(candidate)
        journal.append("decided", generation=1, verdict="accepted" if decision.accepted else "rejected",
                       reason=decision.reason, score={"resolved": 3, "tasks": 3})
        journal.append("generation_recorded", generation=1, sha="b" * 40)
    for number, tampered in ((0, []), (1, sorted(r["instance_id"] for r in results if r["tampered"]))):
        (run_dir / "gens" / f"{number:04d}" / "metrics.json").write_text(json.dumps(
            {"generation": number, "tampered": tampered, "flagged": tampered,
             "proposal_flags": [] if number == 0 else [{"path": "agent_seed/agent.py", "line": 7,
                                                        "signature": "atexit registration",
                                                        "text": "atexit.register(fake_summary)"}]}))


def test_a_generation_that_tampered_is_never_accepted_whatever_its_score(tmp_path, worktree):
    tasks = [t.instance_id for t in load_suite("quickstart").tasks[:3]]
    results = _outcomes(tmp_path, worktree, set(tasks[:2]))
    assert [r["tampered"] for r in results] == [True, True, False]
    assert results[0]["tamper_reasons"] and results[0]["flags"][0]["signature"] == "os._exit"
    by_id = {r["instance_id"]: r for r in results}
    rule = parse_rule("strict")
    best = {t: False for t in tasks}
    raw = rule.decide({t: True for t in tasks}, best)
    assert raw.accepted  # the rule alone would take it: 3 wins, 0 losses
    decided = gate(raw, by_id)
    assert not decided.accepted
    assert decided.reason.startswith("tampered on 2 tasks")
    # an honest candidate passes the gate unchanged
    honest = {t: {**r, "tampered": False} for t, r in by_id.items()}
    assert gate(raw, honest) == raw
    # old journal results (no tampered field) read as honest
    assert gate(raw, {t: {"resolved": True} for t in tasks}) == raw


def test_log_status_and_report_say_a_generation_tampered(tmp_path, worktree, monkeypatch):
    from harness.cli import app

    tasks = [t.instance_id for t in load_suite("quickstart").tasks[:3]]
    results = _outcomes(tmp_path, worktree, set(tasks[:2]))
    root = worktree  # a workspace: a git repository with agent_seed/ at its root
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    rule = parse_rule("strict")
    _journal_run(root, "t1", results, lambda cand: gate(
        rule.decide({t: bool(r["resolved"]) or r["tampered"] for t, r in cand.items()},
                    {t: False for t in cand}), cand))
    state = replay(Journal.read(root / "runs" / "t1" / "journal.jsonl"))
    assert state.generations[1].verdict == "rejected" and state.best == 0

    cli = CliRunner()
    log = cli.invoke(app, ["log", "t1", "--workspace", str(root)], env={"COLUMNS": "250"})
    assert log.exit_code == 0, log.output
    assert "TAMPERED on 2" in log.output
    assert f"gen 1: tampered on {', '.join(sorted(tasks[:2]))}" in log.output
    assert "atexit registration" in log.output
    assert "tampering caught in 2 task run(s) of 1 generation(s)" in log.output
    status = cli.invoke(app, ["status", "t1", "--workspace", str(root)], env={"COLUMNS": "250"})
    assert "TAMPERING caught in 2 task run(s) (generations 1)" in status.output

    report = load_run(root, "t1", with_diffs=False)
    assert report.tampered_runs == 2
    assert report.generations[1].tampered == sorted(tasks[:2])
    html = render_report(report)
    assert 'data-tampering="2"' in html and "TAMPERING" in html
    assert 'data-gen="1"' in html and "atexit registration" in html


def test_a_proposals_diff_is_scanned_new_files_included(tmp_path, worktree):
    import subprocess

    git = lambda *a: subprocess.run(["git", *a], cwd=worktree, check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed")
    assert proposal_flags(worktree) == []
    (worktree / "agent_seed" / "sneaky.py").write_text("import os\nos._exit(0)\n")
    with (worktree / "agent_seed" / "agent.py").open("a") as handle:
        handle.write("import atexit\n")
    flags = proposal_flags(worktree)
    assert {(f["path"], f["signature"]) for f in flags} == {
        ("agent_seed/sneaky.py", "os._exit"), ("agent_seed/agent.py", "atexit registration")}
    index = subprocess.run(["git", "status", "--porcelain"], cwd=worktree, capture_output=True,
                           text=True).stdout
    assert "?? agent_seed/sneaky.py" in index  # the worktree's own index is untouched


def test_a_resolved_flagged_task_is_listed_apart_and_tampering_is_counted():
    """report.json (run_report) and the bench tables keep flagged and tampered runs apart."""
    from benchmark import run_report
    from harness.cli.bench import _verdict

    tasks = load_suite("quickstart").tasks[:3]
    flag = {"path": "pkg/m.py", "line": 1, "signature": "atexit registration", "text": "atexit"}
    results = [
        GradeResult(tasks[0].instance_id, "model", True, True, True, True, flags=[flag]),
        GradeResult(tasks[1].instance_id, "model", False, True, True, True, tampered=True,
                    tamper_reasons=["trip-wire passed"]),
        GradeResult(tasks[2].instance_id, "model", True, True, True, True),
    ]
    report = run_report(tasks, {t.instance_id: "diff" for t in tasks}, results, model="m")
    assert report["resolved_flagged_ids"] == [tasks[0].instance_id]
    assert report["tampered_ids"] == [tasks[1].instance_id] and report["tampered_instances"] == 1
    section = report["ratchet"][tasks[1].instance_id]
    assert section["tampered"] is True and section["tamper_reasons"] == ["trip-wire passed"]
    assert report["ratchet"][tasks[0].instance_id]["flags"] == [flag]
    assert "resolved, flagged" in _verdict(True, flags=[flag])
    assert "TAMPERED" in _verdict(False, tampered=True)
    assert "yes" in _verdict(True, flags=[])


def test_a_diff_that_cannot_be_read_is_a_flag_not_a_crash(tmp_path):
    (tmp_path / "agent_seed").mkdir()  # not a git repository: git fails
    (flag,) = proposal_flags(tmp_path)
    assert flag["signature"] == "the proposal's diff could not be scanned" and flag["text"]
