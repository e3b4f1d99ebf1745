"""The run journal: an append-only JSONL file, ``runs/RUN/journal.jsonl``, the run's memory.

The loop counts a step as done only once it is journaled: ``append`` returns after the
line is flushed and fsynced, so a crash (kill -9, power loss) loses at most the step in
flight, never one that was reported done. Reading back tolerates exactly that loss: a
torn last line is dropped, while a bad line anywhere else means the file was damaged by
something other than a crash and is an error naming the line. Opening a journal to append
cuts a torn tail off first, so the next line starts on a line of its own.

One process writes a journal (the controller of the run); its threads may append
concurrently. Every line is one JSON object::

    {"seq": 7, "ts": "2026-11-22T21:03:04.123456+00:00", "event": "task_evaluated", ...}

The events, and the fields ``replay`` reads (any event may carry more, for people and
reports; any event may carry ``cost_usd``, the money its step spent, summed as spend):

==================== ============================================================================
run_started          ``run``, plus the run's settings; ``resumed: true`` when a run goes on
generation_started   ``generation``, ``parent`` (number of the parent generation)
candidate            ``generation``, ``index`` (1..P), ``valid``, ``reason``, ``sha`` (its branch's
                     commit, None if invalid): one of P proposals (``--proposals P``)
proposal             ``generation``, ``valid`` (bool), ``reason`` (why invalid, or a summary);
                     with P > 1 also ``chosen`` (the candidate index) and ``screened``;
                     ``flags``: the static scan of its diff (absent in older journals)
task_evaluated       ``tree_hash``, ``task_id``, ``attempt``, ``result`` (dict), ``generation``;
                     ``attempt`` says the run's role (`harness.loop.attempts`); ``result`` carries
                     ``tampered``, ``tamper_reasons``, ``flags`` (absent: none)
decided              ``generation``, ``verdict`` ("accepted" | "rejected"), ``reason``, ``score``
                     (an accepted one's: its fresh baseline), ``selection_score`` (deciding runs)
generation_recorded  ``generation``, ``sha``: commit, note and ``best`` are written
budget_exhausted     ``reason``: the run ends, spent
run_stopped          ``reason``: the run ends, interrupted (signal, user); resumable
run_finished         ``reason``: the run ends, done (all generations ran)
==================== ============================================================================
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from harness.errors import JournalError

__all__ = ["EVENTS", "GenerationState", "Journal", "JournalError", "RunState", "fold", "replay"]

EVENTS = frozenset({
    "run_started", "generation_started", "candidate", "proposal", "task_evaluated", "decided",
    "generation_recorded", "budget_exhausted", "run_stopped", "run_finished",
})
_ENDINGS = frozenset({"budget_exhausted", "run_stopped", "run_finished"})
_RESERVED = frozenset({"seq", "ts", "event"})


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _complete_prefix(data: bytes) -> tuple[list[dict[str, Any]], int, str]:
    """The records of ``data``, how many bytes hold them, and which line is damaged ('' if
    none is). A last line that does not parse is torn, not damaged."""
    lines = data.split(b"\n")
    records: list[dict[str, Any]] = []
    end = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if last and not line:  # the file ends with a newline: nothing after it
            break
        record = _parse(line)
        if record is None:
            if last:  # torn by a crash mid-write: the step was never reported done
                break
            return records, end, f"line {number}"
        records.append(record)
        end += len(line) + (0 if last else 1)
    return records, end, ""


class Journal:
    """Appends records to one journal file; see the module docstring for the format."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records = self._repair()
        self._seq = max((r.get("seq", 0) for r in records if isinstance(r.get("seq"), int)), default=0)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:  # the new file's directory entry must survive a crash too
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _repair(self) -> list[dict[str, Any]]:
        """Cut off a torn last line, and end a complete last line without its newline."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, end, damaged = _complete_prefix(data)
        if damaged:
            raise JournalError(f"{self.path}: {damaged} is not a JSON record; the journal was "
                               "damaged by more than a crash, so nothing is appended to it")
        if end < len(data) or (data and not data.endswith(b"\n")):
            with self.path.open("r+b") as handle:
                handle.truncate(end)
                if end and not data[:end].endswith(b"\n"):
                    handle.seek(end)
                    handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        return records

    def append(self, event: str, **data: Any) -> dict[str, Any]:
        """Write one record and return it once it is on disk (flushed and fsynced)."""
        if event not in EVENTS:
            raise JournalError(f"unknown journal event {event!r}; known: {', '.join(sorted(EVENTS))}")
        clash = _RESERVED & data.keys()
        if clash:
            raise JournalError(f"{', '.join(sorted(clash))} are set by the journal, not by callers")
        with self._lock:
            record = {"seq": self._seq + 1, "ts": datetime.now(UTC).isoformat(),
                      "event": event, **data}
            # serialised before anything is written: a value JSON cannot hold fails here
            line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            self._seq += 1
            return record

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """All complete records; a torn last line is dropped, any other bad line is an error."""
        path = Path(path)
        if not path.exists():
            return []
        records, _, damaged = _complete_prefix(path.read_bytes())
        if damaged:
            raise JournalError(f"{path}: {damaged} is not a JSON record (only the last line may "
                               "be torn, by a crash); the journal was damaged otherwise")
        return records


@dataclass
class GenerationState:
    number: int
    parent: int | None = None
    proposal_valid: bool | None = None
    proposal_reason: str | None = None
    verdict: str | None = None
    """"accepted" or "rejected" once decided."""
    reason: str | None = None
    score: Any = None
    sha: str | None = None
    recorded: bool = False
    """Commit, note and ``best`` written: nothing of this generation is left to redo."""
    candidates: dict[int, dict[str, Any]] = field(default_factory=dict)
    """With ``--proposals P``: the journaled candidates by index (their ``candidate`` records)."""
    proposal: dict[str, Any] = field(default_factory=dict)
    """The last ``proposal`` record, whole (its diagnosis, flags, chosen, screened)."""


@dataclass
class RunState:
    """What the journal says happened; what a resumed run starts from."""

    run: str | None = None
    evaluations: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    """Finished task evaluations, by (agent tree hash, task id, attempt)."""
    generations: dict[int, GenerationState] = field(default_factory=dict)
    best: int | None = None
    """The last accepted generation; generation 0 from the start of the run."""
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    """Calls of a model with no known price (``--allow-unpriced``): spend is then unknown."""
    ended: bool = False
    end_reason: str | None = None
    """The ending event and its reason, e.g. "budget_exhausted: $40.00 spent"."""

    @property
    def next_generation(self) -> int:
        return max(self.generations, default=0) + 1

    @property
    def unrecorded(self) -> list[int]:
        """Generations started but not recorded: the work a resumed run finishes first."""
        return sorted(n for n, g in self.generations.items() if not g.recorded)


def replay(events: Iterable[dict[str, Any]]) -> RunState:
    """Fold journal records, in order, into the state of the run."""
    state = RunState()
    for record in events:
        fold(state, record)
    return state


def fold(state: RunState, record: dict[str, Any]) -> RunState:
    """Fold one journal record into ``state`` (in place, and returned): `replay` of a whole
    journal, or the loop keeping its state as it appends (`harness.loop.runlog`)."""

    def generation(record: dict[str, Any]) -> GenerationState:
        number = int(record["generation"])
        return state.generations.setdefault(number, GenerationState(number))

    event = record.get("event")
    try:
        cost = record.get("cost_usd")
        if cost is not None:
            state.spent_usd += float(cost)
        state.unpriced_calls += int(record.get("unpriced_calls") or 0)
        if event == "run_started":
            state.run = record.get("run", state.run)
            state.ended, state.end_reason = False, None
            if state.best is None:
                state.best = 0
        elif event == "generation_started":
            gen = generation(record)
            gen.parent = record.get("parent")
        elif event == "candidate":
            gen = generation(record)
            gen.candidates[int(record["index"])] = {
                k: record.get(k) for k in ("index", "valid", "reason", "sha", "diagnosis")}
        elif event == "proposal":
            gen = generation(record)
            gen.proposal_valid, gen.proposal_reason = bool(record["valid"]), record.get("reason")
            gen.proposal = dict(record)
        elif event == "task_evaluated":
            key = (str(record["tree_hash"]), str(record["task_id"]), int(record["attempt"]))
            state.evaluations[key] = dict(record["result"])
        elif event == "decided":
            gen = generation(record)
            if record["verdict"] not in ("accepted", "rejected"):
                raise ValueError(f"verdict {record['verdict']!r}")
            gen.verdict, gen.reason, gen.score = record["verdict"], record.get("reason"), record.get("score")
            if gen.verdict == "accepted":
                state.best = gen.number
        elif event == "generation_recorded":
            gen = generation(record)
            gen.sha, gen.recorded = record.get("sha"), True
        elif event in _ENDINGS:
            reason = record.get("reason")
            state.ended, state.end_reason = True, f"{event}: {reason}" if reason else str(event)
        else:
            raise ValueError(f"unknown event {event!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalError(f"journal record seq={record.get('seq')} ({event}): {exc!r}") from exc
    return state
