"""The run journal: durable appends, crash-torn tails, concurrent writers, replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.loop.journal import EVENTS, Journal, JournalError, replay
from tests.conftest import ROOT


def _sample(path: Path) -> list[dict]:
    with Journal(path) as journal:
        return [
            journal.append("run_started", run="r1", suite="quickstart", budget_usd=40.0),
            journal.append("generation_started", generation=1, parent=0),
            journal.append("proposal", generation=1, valid=True, reason="tighten the prompt — ü",
                           cost_usd=0.25),
            journal.append("task_evaluated", tree_hash="abc", task_id="t1", attempt=0, generation=1,
                           result={"resolved": True, "nested": {"a": [1, 2, "}\n{"]}}, cost_usd=0.5),
            journal.append("decided", generation=1, verdict="accepted", reason="5/9 > 4/9", score="5/9"),
        ]


def test_append_writes_one_record_a_line_with_seq_and_time(tmp_path):
    path = tmp_path / "runs" / "r1" / "journal.jsonl"
    records = _sample(path)
    assert Journal.read(path) == records
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["ts"].endswith("+00:00") for r in records)
    assert len(path.read_bytes().splitlines()) == 5
    with Journal(path) as journal:  # a reopened journal goes on counting
        assert journal.append("run_stopped", reason="SIGINT")["seq"] == 6


def test_a_journal_cut_at_any_byte_reads_back_every_complete_line(tmp_path):
    """Kill safety: whatever byte a crash stops the file at, reading drops only the torn
    line and loses no complete line before it; appending afterwards starts a fresh line."""
    full = tmp_path / "full.jsonl"
    records = _sample(full)
    data = full.read_bytes()
    ends = [i for i, byte in enumerate(data) if byte == ord("\n")]  # each line's newline
    cut = tmp_path / "cut.jsonl"
    for offset in range(len(data) + 1):
        cut.write_bytes(data[:offset])
        complete = sum(1 for end in ends if end <= offset)  # a line whose newline alone is lost counts
        assert Journal.read(cut) == records[:complete], f"cut at byte {offset}"
        if offset % 13 == 0 or offset in ends:
            with Journal(cut) as journal:
                added = journal.append("run_stopped", reason="resumed after a crash")
            assert added["seq"] == complete + 1
            assert Journal.read(cut) == records[:complete] + [added], f"append after a cut at {offset}"


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "journal.jsonl"
    _sample(path)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:10]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="line 3"):
        Journal.read(path)
    with pytest.raises(JournalError, match="line 3"):
        Journal(path)  # nothing is appended to a damaged journal either


def test_threads_appending_together_write_whole_lines_in_sequence(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)

    def writer(name: str) -> None:
        for i in range(100):
            journal.append("task_evaluated", tree_hash=name, task_id=f"t{i}", attempt=0,
                           result={"pad": name * 200})

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    records = Journal.read(path)
    assert len(records) == 400 == len(path.read_bytes().splitlines())
    assert [r["seq"] for r in records] == list(range(1, 401))
    for n in range(4):
        assert [r["task_id"] for r in records if r["tree_hash"] == f"w{n}"] == [f"t{i}" for i in range(100)]


def test_a_step_acknowledged_before_kill_9_is_in_the_journal(tmp_path):
    """A record is on disk when append returns: a writer killed with SIGKILL right after
    reporting k appends leaves at least k records, and a readable journal."""
    path = tmp_path / "journal.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys; from pathlib import Path; from harness.loop.journal import Journal\n"
         f"j = Journal(Path({str(path)!r}))\n"
         "for i in range(100000):\n"
         "    j.append('task_evaluated', tree_hash='h', task_id=str(i), attempt=0, result={'x': 'y' * 500})\n"
         "    print(i, flush=True)\n")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = [child.stdout.readline() for _ in range(50)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    records = Journal.read(path)
    assert len(records) >= len(acknowledged) == 50
    assert [r["task_id"] for r in records[:50]] == [line.strip() for line in acknowledged]


def test_bad_events_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        with pytest.raises(JournalError, match="known: "):
            journal.append("generation_done", generation=1)
        with pytest.raises(JournalError, match="seq"):
            journal.append("decided", seq=3)
        with pytest.raises(TypeError):
            journal.append("proposal", generation=1, valid=True, reason=object())
        with pytest.raises(ValueError):
            journal.append("proposal", generation=1, valid=True, cost_usd=float("nan"))
        assert journal.append("run_finished", reason="done")["seq"] == 1
    assert [r["event"] for r in Journal.read(path)] == ["run_finished"]


def test_replay_folds_a_journal_into_the_state_a_resume_starts_from(tmp_path):
    path = tmp_path / "journal.jsonl"
    _sample(path)
    with Journal(path) as journal:
        journal.append("generation_recorded", generation=1, sha="c0ffee")
        journal.append("generation_started", generation=2, parent=1)
        journal.append("proposal", generation=2, valid=False, reason="SyntaxError in agent.py", cost_usd=0.1)
        journal.append("task_evaluated", tree_hash="def", task_id="t1", attempt=0, generation=2,
                       result={"resolved": False, "error": "image missing"}, cost_usd=0.0)
        journal.append("task_evaluated", tree_hash="def", task_id="t1", attempt=1, generation=2,
                       result={"resolved": False}, cost_usd=0.15)
        journal.append("decided", generation=2, verdict="rejected", reason="4/9 is not > 5/9")
        journal.append("budget_exhausted", reason="$1.00 of $1.00 spent")
    state = replay(Journal.read(path))
    assert state.run == "r1"
    assert state.best == 1
    assert state.spent_usd == pytest.approx(1.0)
    assert state.ended and state.end_reason == "budget_exhausted: $1.00 of $1.00 spent"
    assert set(state.evaluations) == {("abc", "t1", 0), ("def", "t1", 0), ("def", "t1", 1)}
    assert state.evaluations[("abc", "t1", 0)]["nested"] == {"a": [1, 2, "}\n{"]}
    one, two = state.generations[1], state.generations[2]
    assert (one.parent, one.verdict, one.recorded, one.sha, one.score) == (0, "accepted", True, "c0ffee", "5/9")
    assert (two.proposal_valid, two.proposal_reason, two.verdict) == (False, "SyntaxError in agent.py", "rejected")
    assert state.unrecorded == [2] and state.next_generation == 3

    with Journal(path) as journal:
        journal.append("run_started", run="r1", resumed=True, budget_usd=5.0)
    resumed = replay(Journal.read(path))
    assert not resumed.ended and resumed.end_reason is None and resumed.best == 1


def test_replay_of_a_fresh_run_has_generation_zero_as_best():
    state = replay([{"seq": 1, "event": "run_started", "run": "r1"}])
    assert state.best == 0 and state.next_generation == 1 and not state.ended


def test_replay_names_the_record_it_cannot_fold():
    with pytest.raises(JournalError, match="seq=2"):
        replay([{"seq": 1, "event": "run_started", "run": "r1"},
                {"seq": 2, "event": "decided", "generation": 1, "verdict": "maybe"}])
    with pytest.raises(JournalError, match="seq=1"):
        replay([{"seq": 1, "event": "task_evaluated", "task_id": "t"}])


def test_the_event_vocabulary_is_documented_in_the_module():
    import harness.loop.journal as module

    assert module.__doc__ is not None
    for event in EVENTS:
        assert f"\n{event} " in module.__doc__, event
