"""The loop's journal with its state folded as it appends (`harness.loop.runlog`)."""

from __future__ import annotations

from harness.loop.journal import Journal, fold, replay
from harness.loop.runlog import RunLog

EVENTS = [
    ("run_started", {"run": "r", "resumed": False}),
    ("generation_started", {"generation": 0, "parent": None}),
    ("task_evaluated", {"generation": 0, "tree_hash": "t0", "task_id": "a", "attempt": 0,
                        "result": {"resolved": True}, "cost_usd": 0.25}),
    ("task_evaluated", {"generation": 0, "tree_hash": "t0", "task_id": "b", "attempt": 0,
                        "result": {"resolved": False}, "cost_usd": 0.5, "unpriced_calls": 2}),
    ("proposal", {"generation": 0, "valid": True, "reason": "the seed agent"}),
    ("decided", {"generation": 0, "verdict": "accepted", "reason": "generation 0", "score": {}}),
    ("generation_recorded", {"generation": 0, "sha": "abc"}),
    ("generation_started", {"generation": 1, "parent": 0, "selection_seed": "0:1"}),
    ("candidate", {"generation": 1, "index": 1, "valid": True, "reason": "r1", "sha": "c1",
                   "diagnosis": "d1", "cost_usd": 0.125}),
    ("candidate", {"generation": 1, "index": 2, "valid": False, "reason": "bad", "sha": None}),
    ("proposal", {"generation": 1, "valid": True, "reason": "r1", "diagnosis": "d1", "chosen": 1,
                  "flags": ["x"], "screened": {"1": 1}}),
    ("run_stopped", {"reason": "interrupted", "cost_usd": 0.0625}),
]


def test_the_state_folded_on_append_is_what_a_replay_of_the_file_gives(tmp_path):
    """After every append the state in memory equals a fresh replay of the journal file, so
    the loop never needs to read the file back; a resumed RunLog starts from that state."""
    path = tmp_path / "journal.jsonl"
    log = RunLog(path)
    for event, data in EVENTS:
        log.append(event, **data)
        assert log.state == replay(Journal.read(path)), event
    assert log.state.spent_usd == 0.9375 and log.state.unpriced_calls == 2
    assert log.state.generations[1].proposal["chosen"] == 1
    assert sorted(log.state.generations[1].candidates) == [1, 2]
    log.close()
    resumed = RunLog(path)
    assert resumed.state == log.state
    resumed.append("run_started", run="r", resumed=True)
    assert resumed.state == replay(Journal.read(path)) and not resumed.state.ended
    resumed.close()


def test_a_torn_last_line_is_not_folded_and_the_next_append_starts_a_line(tmp_path):
    """A crash mid-write: the torn record never counts, in the state or in the file."""
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append("run_started", run="r")
    with path.open("ab") as handle:
        handle.write(b'{"seq": 2, "event": "generation_star')
    log = RunLog(path)
    assert log.state == replay([{"seq": 1, "event": "run_started", "run": "r"}])
    log.append("generation_started", generation=0, parent=None)
    assert log.state == replay(Journal.read(path)) and 0 in log.state.generations
    log.close()


def test_fold_is_replay_one_record_at_a_time():
    """`replay` is `fold` over the records in order: one definition of what a record means."""
    records = [{"seq": n, "event": event, **data} for n, (event, data) in enumerate(EVENTS, 1)]
    state = replay([])
    for record in records:
        assert fold(state, record) is state
    assert state == replay(records)
