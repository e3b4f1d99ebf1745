"""The run's journal and the state it folds to, kept together.

The journal on disk is the run's memory (`harness.loop.journal`); the loop reads it once,
when it opens a run, and from then on folds each record into the state as it appends it
(`journal.fold`, the same fold ``replay`` makes of the whole file). So the state in memory
is always what a fresh ``replay`` of the file would give, without reading the file again:
a resumed run, which does read it, starts from exactly the state the killed one had.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from harness.loop.journal import Journal, RunState, fold, replay

__all__ = ["RunLog"]


class RunLog:
    """Appends to ``journal.jsonl`` and keeps ``state`` folded up to the last append."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.state: RunState = replay(Journal.read(self.path)) if self.path.exists() else RunState()
        self.journal = Journal(self.path)
        self._lock = threading.Lock()

    def append(self, event: str, **data: Any) -> dict[str, Any]:
        """Journal one record (on disk when this returns), then fold it into ``state``."""
        with self._lock:  # the state folds records in the order they were written
            record = self.journal.append(event, **data)
            fold(self.state, record)
            return record

    def close(self) -> None:
        self.journal.close()
