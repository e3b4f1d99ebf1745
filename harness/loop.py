"""The self-improvement loop: select a parent, propose, evaluate (staged), decide, record.

Everything a step does is journaled before it counts (`harness.journal`), so ``ratchet
resume`` after a kill at any moment redoes nothing that finished: task evaluations are
keyed by (agent tree hash, task id, attempt), a proposal already journaled is taken from
its worktree, and a recorded generation is never touched again. Git holds the lineage
(`harness.lineage`): one branch per generation, ``best`` moved only on acceptance.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmark import Grader, TaskSpec
from benchmark import _docker
from benchmark._agent_env import DockerEnvironment
from benchmark._images import AGENT_VENV, SANDBOX_USER
from harness.acceptance import DEFAULT_RULE, Decision, parse_rule
from harness.agent_source import AgentSource, resolve_agent
from harness.evaluate import TaskRunner
from harness.executors import Executor, LocalPool, parse_executor
from harness.evidence import TaskEvidence, build_evidence, load_gateway_trajectory
from harness.gateway import Budget, Gateway, Ledger, Upstream
from harness.journal import Journal, RunState, replay
from harness.lineage import Lineage
from harness.proposer import MetaProposer, ModelCallFailed, read_agent_files
from harness.selection import GenerationRecord, parse_selector
from harness.self_proposer import SelfProposer

__all__ = ["Executor", "LocalPool", "LoopSettings", "Controller", "StopRequested"]


class StopRequested(Exception):
    """Ctrl-C or a spent budget: the loop stops between journaled steps."""


@dataclass
class LoopSettings:
    run: str
    suite: str
    generations: int
    agent_model: str
    meta_model: str
    budget_usd: float | None = None
    task_budget_usd: float | None = None
    acceptance: str = DEFAULT_RULE
    selector: str = "best"
    stage_size: int = 3
    """Tasks in the first stage; the rest run only while the candidate can still win."""
    holdout: int = 0
    """The last N tasks of the suite decide acceptance and are never shown to the proposer."""
    workers: int = 2
    seed: int = 0
    scripted: str | None = None
    """None: a real endpoint; "demo": the built-in scripted demo models."""
    max_proposal_attempts: int = 3
    proposer: str = "meta"
    """"meta": a meta model edits the agent; "self": the parent agent edits itself (DGM)."""
    evidence_tokens: int = 6000
    agent_timeout_s: float = 900.0
    base: str = "HEAD"
    executor: str = "local"
    """Where task runs go: local, ray, ray:auto or ray:HOST:PORT (`harness.executors`)."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "LoopSettings":
        return cls(**json.loads(path.read_text()))


@dataclass
class Controller:
    workspace: Path
    settings: LoopSettings
    tasks: list[TaskSpec]
    grader: Grader
    agent_upstream: Upstream
    meta_upstream: Upstream
    on_event: Callable[[str], None] = lambda message: None
    executor: Executor | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.run_dir = self.workspace / "runs" / s.run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.run_dir / "journal.jsonl"
        self.state: RunState = replay(Journal.read(self.journal_path)) if self.journal_path.exists() else RunState()
        self.journal = Journal(self.journal_path)
        self.lineage = Lineage(self.workspace, s.run)
        self.rule = parse_rule(s.acceptance)
        self.selector = parse_selector(s.selector)
        self.rng = random.Random(s.seed)
        self.ledger = Ledger()
        self.ledger.run.cost_usd = self.state.spent_usd
        budget = Budget(per_task=s.task_budget_usd, per_run=s.budget_usd)
        logs = self.run_dir / "trajectories"
        self.agent_gateway = Gateway(self.agent_upstream, model=s.agent_model, log_dir=logs,
                                     budget=budget, ledger=self.ledger)
        self.meta_gateway = Gateway(self.meta_upstream, model=s.meta_model, log_dir=logs / "meta",
                                    budget=budget, ledger=self.ledger)
        self.runner = TaskRunner(self.agent_gateway, self.grader,
                                 DockerEnvironment(self.grader.builder, timeout_s=s.agent_timeout_s),
                                 self.run_dir / "agent-logs")
        self.executor = self.executor or parse_executor(s.executor, workers=s.workers,
                                                        on_event=self._say)
        self._live_stage, self._live_best = "seed", 0
        self._agents: dict[str, AgentSource] = {}
        split = len(self.tasks) - s.holdout
        self.study = self.tasks[:split] if s.holdout else self.tasks
        self.accept_on = self.tasks[split:] if s.holdout else self.tasks

    def close(self) -> None:
        """Release the executor (a Ray connection) and the gateway's relay endpoint."""
        self.executor.close()
        self.agent_gateway.stop_relay()

    # -- helpers ------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.on_event(message)

    def _run_budget_refusal(self) -> str | None:
        return self.ledger.refusal("-", "-", Budget(per_run=self.settings.budget_usd))

    def _check_stop(self) -> None:
        refusal = self._run_budget_refusal()
        if refusal:
            raise StopRequested(refusal)
        if self.stop_flag.is_set():
            raise StopRequested("interrupted")

    def _results(self, tree: str, tasks: list[TaskSpec]) -> dict[str, dict]:
        return {t.instance_id: self.state.evaluations[(tree, t.instance_id, 0)]
                for t in tasks if (tree, t.instance_id, 0) in self.state.evaluations}

    infra_passes = 2
    """Passes over the tasks an infrastructure error left without a verdict, before the
    run stops (resumable) rather than decide a generation on part of its tasks."""

    def evaluate(self, gen: int, agent: AgentSource, tasks: list[TaskSpec]) -> dict[str, dict]:
        """Run the tasks not yet evaluated for this tree; journal each as it finishes.
        Returns a verdict for every task, or raises StopRequested."""
        errors: dict[str, str] = {}
        for attempt in range(self.infra_passes):
            todo = [t for t in tasks if (agent.tree_hash, t.instance_id, 0) not in self.state.evaluations]
            if not todo:
                break
            if attempt:
                self._say(f"gen {gen}: {len(todo)} task(s) had infrastructure errors; running "
                          "them once more")
            else:
                self._say(f"gen {gen}: evaluating {len(todo)} task(s)"
                          f"{f' ({len(tasks) - len(todo)} cached)' if len(todo) < len(tasks) else ''}")
            errors = self._evaluate_pass(gen, agent, tasks, todo)
            self._check_stop()
        missing = [t.instance_id for t in tasks
                   if (agent.tree_hash, t.instance_id, 0) not in self.state.evaluations]
        if missing:
            first = missing[0]
            raise StopRequested(
                f"infrastructure errors: {len(missing)} task(s) of gen {gen} have no verdict "
                f"after {self.infra_passes} tries (first: {first}: {errors.get(first, 'not run')}); "
                "nothing was decided on part of the tasks. Fix the cause, then resume the run")
        return self._results(agent.tree_hash, tasks)

    def _evaluate_pass(self, gen: int, agent: AgentSource, tasks: list[TaskSpec],
                       todo: list[TaskSpec]) -> dict[str, str]:
        """One pass over `todo`; the infrastructure errors, by task."""
        errors: dict[str, str] = {}

        def should_start() -> bool:
            return not (self.stop_flag.is_set() or self._run_budget_refusal())

        for task, outcome in self.executor.run_tasks(self.runner, agent, todo,
                                                     generation=f"gen-{gen:04d}",
                                                     should_start=should_start):
            if outcome is None:
                continue
            if outcome.budget_exhausted and self._run_budget_refusal():
                continue  # cut off by the run's budget: not a verdict; the loop stops below
            if outcome.error:  # infrastructure: not a verdict, not cached
                errors[task.instance_id] = outcome.error.splitlines()[0]
                self._say(f"gen {gen}: {task.instance_id}: error: {outcome.error}")
                continue
            result = {k: v for k, v in asdict(outcome).items() if k != "patch"}
            self.journal.append("task_evaluated", generation=gen, tree_hash=agent.tree_hash,
                                task_id=task.instance_id, attempt=0, result=result,
                                cost_usd=outcome.cost_usd)
            self.state.evaluations[(agent.tree_hash, task.instance_id, 0)] = result
            done = self._results(agent.tree_hash, tasks)
            resolved = sum(1 for r in done.values() if r["resolved"])
            versus = f"; best resolves {self._live_best} on the acceptance tasks" if gen else ""
            self._say(f"gen {gen} {self._live_stage}: {len(done)}/{len(tasks)} done, {resolved} "
                      f"resolved{versus} | {task.instance_id}: "
                      f"{'resolved' if outcome.resolved else 'unresolved'}")
        return errors

    def _outcomes(self, results: dict[str, dict]) -> dict[str, bool]:
        return {task_id: bool(r["resolved"]) for task_id, r in results.items()}

    def _archive(self) -> list[GenerationRecord]:
        records = []
        for number, g in sorted(self.state.generations.items()):
            if not g.recorded:
                continue
            children = sum(1 for other in self.state.generations.values() if other.parent == number)
            score = (g.score or {}).get("rate", 0.0) if isinstance(g.score, dict) else 0.0
            records.append(GenerationRecord(number, g.parent, score, bool(g.proposal_valid or number == 0),
                                            g.verdict == "accepted", children))
        return records

    # -- the run -------------------------------------------------------------------------

    def run(self) -> RunState:
        s = self.settings
        resumed = bool(self.state.generations)
        self.journal.append("run_started", run=s.run, resumed=resumed, settings=asdict(s))
        try:
            if 0 not in self.state.generations or not self.state.generations[0].recorded:
                self._seed()
            for gen in range(1, s.generations + 1):
                existing = self.state.generations.get(gen)
                if existing is not None and existing.recorded:
                    continue
                self._check_stop()
                self._generation(gen)
        except StopRequested as stop:
            reason = str(stop)
            event = "budget_exhausted" if "budget" in reason else "run_stopped"
            # money spent on work that was discarded (a run cut off by the budget) still counts
            unjournaled = max(0.0, self.ledger.run.cost_usd - self.state.spent_usd)
            self.journal.append(event, reason=reason, cost_usd=round(unjournaled, 6))
            self.state = replay(Journal.read(self.journal_path))
            self._say(f"stopped: {reason}")
            return self.state
        self.journal.append("run_finished", reason=f"{s.generations} generations")
        self.state = replay(Journal.read(self.journal_path))
        return self.state

    def _seed(self) -> None:
        self.lineage.start(self.settings.base)
        gen0 = self.lineage.head(0)
        if 0 not in self.state.generations:
            self.journal.append("generation_started", generation=0, parent=None)
        agent = self._parent_agent(0)
        results = self.evaluate(0, agent, self.tasks)
        score = self._score(results, self.accept_on)
        self.journal.append("proposal", generation=0, valid=True, reason="the seed agent")
        self.journal.append("decided", generation=0, verdict="accepted", reason="generation 0",
                            score=score)
        self._record(0, gen0, score, "accepted", "the seed agent", results, tree=agent.tree_hash)

    def _score(self, results: dict[str, dict], tasks: list[TaskSpec]) -> dict[str, Any]:
        resolved = sum(1 for t in tasks if results.get(t.instance_id, {}).get("resolved"))
        evaluated = sum(1 for t in tasks if t.instance_id in results)
        return {"resolved": resolved, "tasks": len(tasks), "evaluated": evaluated,
                "rate": resolved / max(1, len(tasks)),
                "cost_usd": round(sum(r.get("cost_usd", 0.0) for r in results.values()), 6)}

    def _record(self, gen: int, sha: str, score: dict, verdict: str, headline: str,
                results: dict[str, dict], *, tree: str, extra: dict | None = None) -> None:
        metrics = {"run": self.settings.run, "generation": gen, "sha": sha, "verdict": verdict,
                   "headline": headline, "score": score, "tree": tree,
                   "tasks": self._outcomes(results), **(extra or {})}
        self.lineage.set_note(sha, metrics)
        if verdict == "accepted" and gen > 0:
            self.lineage.move_best(sha)
        out = self.run_dir / "gens" / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.journal.append("generation_recorded", generation=gen, sha=sha)
        self.state = replay(Journal.read(self.journal_path))

    # -- one generation ------------------------------------------------------------------

    def _parent_agent(self, parent: int) -> AgentSource:
        """A recorded generation's agent; commits are immutable, so one copy per commit."""
        sha = self.lineage.head(parent)
        if sha not in self._agents:
            self._agents[sha] = resolve_agent(sha, repo_dir=self.workspace)
        return self._agents[sha]

    def _evidence(self, parent: int):
        agent = self._parent_agent(parent)
        results = self._results(agent.tree_hash, self.study)
        by_id = {t.instance_id: t for t in self.study}
        records = []
        for task_id, result in sorted(results.items()):
            trajectory_path = Path(result.get("trajectory") or "")
            log_path = Path(result.get("grade_log") or "")
            records.append(TaskEvidence(
                instance_id=task_id, resolved=bool(result["resolved"]),
                problem_statement=by_id[task_id].problem_statement,
                trajectory=load_gateway_trajectory(trajectory_path) if trajectory_path.is_file() else [],
                test_output=log_path.read_text(errors="replace") if log_path.is_file() else ""))
        return build_evidence(records, max_tokens=self.settings.evidence_tokens)

    def _selfcheck(self, worktree: Path) -> list[str]:
        """The edited agent's own checks, run in a sandbox (it is model-written code)."""
        copy = resolve_agent(str(worktree))
        image = self.grader.builder.ensure_task(self.tasks[0])
        run = _docker.run_script(
            image, f"cd /agent && {AGENT_VENV}/bin/python -m agent_seed selfcheck",
            timeout_s=300, user=SANDBOX_USER,
            volumes={str(copy.directory): {"bind": "/agent", "mode": "ro"}},
            environment={"HOME": "/home/sandbox"})
        if run.exit_code == 0:
            return []
        return [f"`python -m agent_seed selfcheck` failed (exit {run.exit_code}):\n"
                + "\n".join(run.log.strip().splitlines()[-30:])]

    def _propose(self, gen: int, parent: int, worktree: Path):
        """The meta model edits the agent (default), or, with ``proposer="self"``, the parent
        agent itself does, in a sandbox (the Darwin Gödel Machine's self-referential mode)."""
        evidence = self._evidence(parent)
        if self.settings.proposer == "self":
            key = f"gen-{gen:04d}.self"
            proposer = SelfProposer(DockerEnvironment(self.grader.builder,
                                                      timeout_s=self.settings.agent_timeout_s),
                                    self.agent_gateway, self.tasks[0],
                                    max_attempts=self.settings.max_proposal_attempts,
                                    extra_check=self._selfcheck, channel_key=key,
                                    generation=f"gen-{gen:04d}")
            result = self._guarded(lambda: proposer.propose(worktree, evidence,
                                                            read_agent_files(worktree)))
        else:
            key = f"gen-{gen:04d}.meta"
            channel = self.meta_gateway.open_channel(key, f"gen-{gen:04d}", tcp=True)
            try:
                import openai

                client = openai.OpenAI(base_url=channel.base_url, api_key="ratchet", max_retries=0)
                proposer = MetaProposer(client, self.settings.meta_model,
                                        max_attempts=self.settings.max_proposal_attempts,
                                        extra_check=self._selfcheck)
                result = self._guarded(lambda: proposer.propose(worktree, evidence,
                                                                read_agent_files(worktree)))
            finally:
                self.meta_gateway.close_channel(channel)
        usage = self.ledger.task(key)
        out = self.run_dir / "gens" / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "proposal.json").write_text(json.dumps(
            {"proposer": self.settings.proposer, "valid": result.valid, "error": result.error,
             "messages": result.messages, "attempts": [asdict(a) for a in result.attempts]},
            indent=2, default=str))
        return result, usage.cost_usd

    def _guarded(self, propose):
        try:
            return propose()
        except ModelCallFailed as exc:  # not the proposal's fault: stop, resumable
            self._check_stop()
            raise StopRequested(f"the proposer's model call failed: {exc}") from exc

    def _generation(self, gen: int) -> None:
        s = self.settings
        state = self.state.generations.get(gen)
        if state is None or state.parent is None:
            parent = self.selector.select(self._archive(), self.rng).number
            self.journal.append("generation_started", generation=gen, parent=parent)
            self.state = replay(Journal.read(self.journal_path))
        else:
            parent = state.parent
        worktree = self.lineage.worktree(gen, self.lineage.branch(parent))
        state = self.state.generations[gen]
        if state.proposal_valid is None:  # not journaled: whatever is in the worktree is a torn proposal
            self.lineage.reset(gen)
            self._say(f"gen {gen}: proposing a change of generation {parent}")
            result, cost = self._propose(gen, parent, worktree)
            self._check_stop()
            headline = result.proposal.headline if result.valid else ""
            self.journal.append("proposal", generation=gen, valid=result.valid,
                                reason=headline if result.valid else result.error,
                                diagnosis=result.proposal.diagnosis if result.valid else None,
                                cost_usd=cost)
            self.state = replay(Journal.read(self.journal_path))
            state = self.state.generations[gen]
        if not state.proposal_valid:
            reason = f"invalid proposal: {state.proposal_reason}"
            self._say(f"gen {gen}: {reason}")
            self.journal.append("decided", generation=gen, verdict="rejected", reason=reason,
                                score=None)
            sha = self.lineage.commit(gen, message=f"invalid proposal\n\n{state.proposal_reason}",
                                      trailers={"Ratchet-Verdict": "invalid"}, allow_empty=True)
            self._record(gen, sha, {}, "invalid", reason, {}, tree="")
            return
        diagnosis = next((e.get("diagnosis") for e in reversed(Journal.read(self.journal_path))
                          if e["event"] == "proposal" and e.get("generation") == gen), "") or ""
        headline = state.proposal_reason or "proposal"
        candidate = resolve_agent(str(worktree))
        best_gen = max((n for n, g in self.state.generations.items()
                        if g.recorded and g.verdict == "accepted"), default=0)
        best_agent = self._parent_agent(best_gen)
        best = self._outcomes(self._results(best_agent.tree_hash, self.accept_on))
        # staged: a few tasks first, the rest only while the candidate can still win
        first = self.accept_on[:s.stage_size]
        self._live_best = sum(best.values())
        self._live_stage = f"stage 1 ({len(first)} tasks)"
        results = self.evaluate(gen, candidate, first)
        optimistic = {**{t.instance_id: True for t in self.accept_on}, **self._outcomes(results)}
        early: Decision | None = None
        if len(first) < len(self.accept_on) and not self.rule.decide(optimistic, best).accepted:
            early = self.rule.decide(optimistic, best)
            self._say(f"gen {gen}: cannot beat best even if it resolves every remaining task; stopping early")
        else:
            self._live_stage = f"stage 2 (all {len(self.tasks)} tasks)"
            results = self.evaluate(gen, candidate, self.tasks)
        accept_results = {t.instance_id: results[t.instance_id] for t in self.accept_on
                          if t.instance_id in results}
        decision = (self.rule.decide({**self._outcomes(accept_results)}, best) if early is None
                    else Decision(False, early.rule,
                                  f"stopped after {len(first)} of {len(self.accept_on)} tasks: even "
                                  f"resolving every remaining task it could not be accepted ({early.reason})",
                                  early.candidate_resolved, early.best_resolved,
                                  early.tasks, early.wins, early.losses, early.p_value))
        verdict = "accepted" if decision.accepted else "rejected"
        score = self._score(results, self.accept_on)
        self.journal.append("decided", generation=gen, verdict=verdict, reason=decision.reason,
                            score=score)
        self._say(f"gen {gen}: {verdict}: {decision.reason}")
        message = diagnosis.strip() or headline  # the diagnosis opens with its headline
        sha = self.lineage.commit(gen, message=message, trailers={
            "Ratchet-Score": f"{score['resolved']}/{score['tasks']}", "Ratchet-Verdict": verdict})
        self._record(gen, sha, score, verdict, headline, results, tree=candidate.tree_hash,
                     extra={"parent": parent, "decision": asdict(decision)})
