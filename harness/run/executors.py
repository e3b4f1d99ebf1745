"""Where task runs and gradings execute: this machine's thread pool, or a Ray cluster.

An executor takes task runs (agent + grading) and gradings and hands results back in
completion order. The caller (``ratchet bench run``, ``bench validate``, the loop) records
each result as it arrives, on the controller, so the journal's semantics do not depend on
where a task ran. ``--executor`` picks one: ``local`` (the default), ``ray`` (a local Ray
instance), ``ray:auto`` (the cluster this machine belongs to) or ``ray:HOST:PORT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from benchmark import ImageBuilder, InfraError, TaskSpec, grade_locally
from benchmark import map_unordered
from harness.run.evaluate import TaskOutcome
from harness.errors import ExecutorError
from harness.protocols import EXECUTORS, Executor

__all__ = ["Executor", "ExecutorError", "LocalPool", "build_images", "parse_executor"]


@dataclass
class LocalPool:
    """`workers` task runs at a time on this machine's Docker daemon."""

    workers: int = 2

    def run_tasks(self, runner, agent, tasks, *, generation, should_start=lambda: True):
        def one(task: TaskSpec) -> tuple[TaskSpec, TaskOutcome | None]:
            if not should_start():
                return task, None
            return task, runner.run_task(task, agent, generation=generation)

        return map_unordered(one, tasks, workers=self.workers)

    def grade(self, grader, jobs):
        return grade_locally(grader, jobs, workers=self.workers)

    def prepare(self, builder, tasks):
        return [build_images(builder, tasks, node="local")]

    def close(self) -> None:
        pass


def build_images(builder: ImageBuilder, tasks: Sequence[TaskSpec], *, node: str) -> dict:
    """Every task's image, built with `builder` where missing; one failure stops no other."""
    errors = {}
    for task in tasks:
        try:
            builder.ensure_task(task)
        except InfraError as exc:
            errors[task.instance_id] = str(exc)
    return {"node": node, "tasks": len(tasks), "built": list(builder.built), "errors": errors}


def parse_executor(spec: str, *, workers: int = 2,
                   on_event: Callable[[str], None] = lambda message: None) -> Executor:
    """``local``, ``ray``, ``ray:auto`` or ``ray:HOST:PORT`` (see the module doc)."""
    name, _, address = spec.partition(":")
    if name == "local" and not address:
        return LocalPool(workers)
    if name == "ray":
        return EXECUTORS.load("ray").connect(address or None, local_slots=workers, on_event=on_event)
    raise ExecutorError(f"unknown executor {spec!r}; use local, ray (a Ray instance started "
                        "here), ray:auto (this machine's Ray cluster) or ray:HOST:PORT (a head)")
