"""The self-improvement loop: select a parent, propose, evaluate, decide, record.

A candidate runs K times (``attempts``) on each deciding task; the rule tests its runs,
paired with K fresh baseline runs of the best (`harness.loop.attempts`), with futility looks
after 1/3 and 2/3 of the pairs (`harness.loop.acceptance.decide_in_looks`). An accepted
candidate is run K more times: those fresh runs, never the draw that won the test, are the
new best's baseline and the score shown for it. With ``proposals`` P > 1, P candidates are
made from the parent, each screened on one run per deciding task, and only the screening
winner is tested, on fresh runs (so the screening's selection does not bias the test).

Everything a step does is journaled before it counts (`harness.loop.journal`), so ``ratchet
resume`` after a kill at any moment redoes nothing that finished: task evaluations are
keyed by (agent tree hash, task id, attempt), a proposal already journaled is taken from
its worktree, and a recorded generation is never touched again. Git holds the lineage
(`harness.loop.lineage`): one branch per generation, ``best`` moved only on acceptance.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmark import DockerEnvironment, Grader, TaskSpec
from benchmark import docker_host as _docker
from harness.loop.acceptance import Decision, decide_in_looks, parse_rule
from harness.run.agent_source import AgentSource, resolve_agent
from harness.loop.attempts import attempt_index, pairs, score
from harness.run.evaluate import TaskRunner
from harness.run.executors import Executor, LocalPool, parse_executor
from harness.propose.evidence import collect_evidence
from harness.models.gateway import Budget, Gateway, OpenAIUpstream
from harness.models.ledger import Ledger, Usage
from harness.models.prices import PriceTable
from harness.loop.journal import Journal, RunState, replay
from harness.loop.lineage import Lineage
from harness.propose.meta import MetaProposer, ModelCallFailed, read_agent_files
from harness.protocols import ModelClient
from harness.loop.selection import GenerationRecord, parse_selector
from harness.propose.smoke import check_candidate
from harness.propose.self import SelfProposer
from harness.loop.settings import LoopSettings
from harness.loop.splits import check_unchanged, plan_splits, start_of_run_power
from harness.loop.tamper import flagged_tasks, gate, proposal_flags, tampered_tasks
from harness.errors import StopRequested

__all__ = ["Executor", "LocalPool", "LoopSettings", "Controller", "StopRequested"]


@dataclass
class Controller:
    workspace: Path
    settings: LoopSettings
    tasks: list[TaskSpec]
    grader: Grader
    agent_upstream: ModelClient
    meta_upstream: ModelClient
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
        # the true spend: every call the gateways settled, on disk as it happened
        self.ledger = Ledger.open(self.run_dir / "spend.jsonl")
        missing = self.state.spent_usd - self.ledger.run.cost_usd
        if missing > 1e-9:  # a run from before spend logs: its journal's spend is the start
            self.ledger.carry(Usage(cost_usd=missing, unpriced_calls=max(
                0, self.state.unpriced_calls - self.ledger.run.unpriced_calls)),
                "spend journaled before this run had a spend log")
        self.prices = PriceTable.load(extra=s.prices)
        (self.run_dir / "prices.json").write_text(json.dumps(
            self.prices.snapshot([s.agent_model, s.meta_model]), indent=2))
        budget = Budget(per_task=s.task_budget_usd, per_run=s.budget_usd)
        logs = self.run_dir / "trajectories"
        self.agent_gateway = Gateway(self.agent_upstream, model=s.agent_model, log_dir=logs,
                                     budget=budget, ledger=self.ledger, prices=self.prices,
                                     max_output_tokens=s.max_output_tokens)
        self.meta_gateway = Gateway(self.meta_upstream, model=s.meta_model, log_dir=logs / "meta",
                                    budget=budget, ledger=self.ledger, prices=self.prices,
                                    max_output_tokens=s.max_output_tokens)
        self.meta_gateway.replay_paid = True  # a paid proposal is not bought twice on resume
        self.runner = TaskRunner(self.agent_gateway, self.grader,
                                 DockerEnvironment(self.grader.builder, timeout_s=s.agent_timeout_s),
                                 self.run_dir / "agent-logs")
        self.executor = self.executor or parse_executor(s.executor, workers=s.workers,
                                                        on_event=self._say)
        self._live_stage, self._live_best = "seed", ""
        self.horizon = s.horizon if s.horizon is not None else s.generations
        """Generations the acceptance rule's error budget is split over (0: open-ended)."""
        self._agents: dict[str, AgentSource] = {}
        # the one place the run's tasks are split (harness.loop.splits; the CLI validated the options)
        self.splits = plan_splits(self.tasks, study=s.study, decide=s.decide,
                                  report=s.report_split, holdout=s.holdout, seed=s.seed)
        self.study, self.accept_on = self.splits.study, self.splits.decide
        self.report_on = self.splits.report
        self.run_on = self.splits.run_each_generation
        """What every candidate runs: study and deciding tasks, never the report split."""
        recorded = self.run_dir / "splits.json"
        if recorded.is_file():
            check_unchanged(self.splits, json.loads(recorded.read_text()))
        recorded.write_text(json.dumps(self.splits.as_dict(), indent=2))

    def stop_now(self) -> None:
        """A second Ctrl-C/SIGTERM: start nothing more, and remove this process's containers
        (tasks in flight, a selfcheck), so their runs end at once with no verdict (what
        finished before is journaled already); the loop then stops as after the first."""
        self.stop_flag.set()
        self.runner.cancelled.set()
        threading.Thread(target=_docker.remove_process_containers, daemon=True,
                         name="stop-now").start()

    def close(self) -> None:
        """Release the executor (a Ray connection) and the gateway's relay endpoint."""
        self.executor.close()
        self.agent_gateway.stop_relay()

    # -- helpers ------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.on_event(message)

    def _spend_of(self, key: str) -> dict[str, Any]:
        """The journal fields for what channel `key` spent since it was last journaled."""
        usage = self.ledger.claim(key)
        return {"cost_usd": usage.cost_usd, **({"unpriced_calls": usage.unpriced_calls}
                                                if usage.unpriced_calls else {})}

    def _unjournaled(self) -> dict[str, Any]:
        """The journal fields bringing its spend to the spend log's: calls of discarded work,
        or of a process killed before it journaled them. The journal is read afresh (the
        state in memory lags the task records appended since the last replay)."""
        journaled = replay(Journal.read(self.journal_path))
        cost = self.ledger.run.cost_usd - journaled.spent_usd
        unpriced = self.ledger.run.unpriced_calls - journaled.unpriced_calls
        return {**({"cost_usd": round(cost, 9)} if cost > 1e-9 else {}),
                **({"unpriced_calls": unpriced} if unpriced > 0 else {})}

    def forecast(self) -> str:
        """Spend per generation so far, and how many more generations the budget covers."""
        done = sum(1 for g in self.state.generations.values() if g.recorded)
        spent, s = self.ledger.run, self.settings
        if spent.unpriced_calls:
            return (f"forecast: spend per generation unknown ({spent.unpriced_calls} call(s) of an "
                    f"unpriced model; ${spent.cost_usd:.4f} priced over {done} generation(s))")
        each = spent.cost_usd / max(done, 1)
        line = f"forecast: ${each:.4f} per generation so far (${spent.cost_usd:.4f} over {done})"
        left = s.generations + 1 - done
        if s.budget_usd is None:
            return line + f"; no budget set; {left} generation(s) to go"
        remaining = max(0.0, s.budget_usd - spent.cost_usd)
        covers = "any number of" if each == 0 else f"about {int(remaining // each)}"
        return (line + f"; the ${s.budget_usd:.2f} budget (${remaining:.4f} left) covers {covers} "
                f"more; {left} more planned")

    def _run_budget_refusal(self) -> str | None:
        return self.ledger.refusal("-", "-", Budget(per_run=self.settings.budget_usd))

    def _check_stop(self) -> None:
        refusal = self._run_budget_refusal()
        if refusal:
            raise StopRequested(refusal)
        if self.stop_flag.is_set():
            raise StopRequested("interrupted")

    def _results(self, tree: str, tasks: list[TaskSpec],
                 attempts: list[int]) -> dict[tuple[str, int], dict]:
        """The journaled runs of `tree` on `tasks` at `attempts`, by (task id, attempt)."""
        return {(t.instance_id, a): self.state.evaluations[(tree, t.instance_id, a)]
                for t in tasks for a in attempts if (tree, t.instance_id, a) in self.state.evaluations}

    def _slots(self, gen: int, role: str, proposal: int = 0) -> list[int]:
        count = 1 if role == "screen" else self.settings.attempts
        return [attempt_index(gen, role, j, proposal) for j in range(count)]

    def _baseline_slots(self, gen: int) -> list[int]:
        """The runs a recorded generation is compared and shown by: its fresh baseline (the
        seed's own evaluation for generation 0, which nothing was selected on)."""
        return self._slots(gen, "decide" if gen == 0 else "baseline")

    infra_passes = 2
    """Passes over the tasks an infrastructure error left without a verdict, before the
    run stops (resumable) rather than decide a generation on part of its tasks."""

    def evaluate(self, gen: int, agent: AgentSource, tasks: list[TaskSpec],
                 attempts: list[int] = (0,)) -> dict[tuple[str, int], dict]:
        """Run each task at each attempt not yet evaluated for this tree; journal each as it
        finishes. Returns a verdict for every (task, attempt), or raises StopRequested."""
        attempts = list(attempts)
        errors: dict[str, str] = {}
        for attempt in attempts:
            for tries in range(self.infra_passes):
                todo = [t for t in tasks
                        if (agent.tree_hash, t.instance_id, attempt) not in self.state.evaluations]
                if not todo:
                    break
                if tries:
                    self._say(f"gen {gen}: {len(todo)} task(s) had infrastructure errors; running "
                              "them once more")
                else:
                    which = f" (attempt {attempt})" if attempt % 10_000 else ""
                    self._say(f"gen {gen}: evaluating {len(todo)} task(s){which}"
                              f"{f' ({len(tasks) - len(todo)} cached)' if len(todo) < len(tasks) else ''}")
                errors = self._evaluate_pass(gen, agent, tasks, todo, attempt)
                self._check_stop()
            missing = [t.instance_id for t in tasks
                       if (agent.tree_hash, t.instance_id, attempt) not in self.state.evaluations]
            if missing:
                first = missing[0]
                raise StopRequested(
                    f"infrastructure errors: {len(missing)} task(s) of gen {gen} have no verdict "
                    f"after {self.infra_passes} tries (first: {first}: {errors.get(first, 'not run')}); "
                    "nothing was decided on part of the tasks. Fix the cause, then resume the run")
        return self._results(agent.tree_hash, tasks, attempts)

    def _evaluate_pass(self, gen: int, agent: AgentSource, tasks: list[TaskSpec],
                       todo: list[TaskSpec], attempt: int = 0) -> dict[str, str]:
        """One pass over `todo` at one attempt; the infrastructure errors, by task."""
        errors: dict[str, str] = {}

        def should_start() -> bool:
            return not (self.stop_flag.is_set() or self._run_budget_refusal())

        # attempt 0 of generation N keeps the plain label (grades/TASK/agent-gen-NNNN: export)
        label = f"gen-{gen:04d}" + (f".a{attempt}" if attempt % 10_000 else "")
        for task, outcome in self.executor.run_tasks(self.runner, agent, todo, generation=label,
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
                                task_id=task.instance_id, attempt=attempt, result=result,
                                **self._spend_of(f"{label}.{task.instance_id}"))
            self.state.evaluations[(agent.tree_hash, task.instance_id, attempt)] = result
            done = self._results(agent.tree_hash, tasks, [attempt])
            resolved = sum(1 for r in done.values() if r["resolved"])
            versus = f"; best resolves {self._live_best}" if gen else ""
            self._say(f"gen {gen} {self._live_stage}: {len(done)}/{len(tasks)} done, {resolved} "
                      f"resolved{versus} | {task.instance_id}: "
                      f"{'resolved' if outcome.resolved else 'unresolved'}")
        return errors

    def _outcomes(self, results: dict[tuple[str, int], dict]) -> dict[str, bool]:
        """Task id -> resolved, from each task's first run among `results` (metrics.json)."""
        out: dict[str, bool] = {}
        for (task_id, _), r in sorted(results.items()):
            out.setdefault(task_id, bool(r["resolved"]))
        return out

    def _archive(self) -> list[GenerationRecord]:
        """What selectors see. A score's rate is over the runs made, so a generation stopped
        by a futility look is not scored as failing the tasks it never ran."""
        records = []
        for number, g in sorted(self.state.generations.items()):
            if not g.recorded:
                continue
            children = sum(1 for other in self.state.generations.values() if other.parent == number)
            score = g.score if isinstance(g.score, dict) else {}
            runs = score.get("runs", score.get("evaluated", score.get("tasks", 0))) or 0
            rate = score.get("resolved", 0) / runs if runs else 0.0
            records.append(GenerationRecord(number, g.parent, rate, bool(g.proposal_valid or number == 0),
                                            g.verdict == "accepted", children,
                                            resolved=int(score.get("resolved", 0) or 0),
                                            evaluated=int(runs)))
        return records

    # -- the run -------------------------------------------------------------------------

    def run(self) -> RunState:
        s = self.settings
        resumed = bool(self.state.generations)
        # calls a killed process paid for but never journaled are in the spend log: the
        # journal takes them now, so its spend is the log's (and nothing is counted twice)
        self.journal.append("run_started", run=s.run, resumed=resumed, settings=asdict(s),
                            **self._unjournaled())
        self.state = replay(Journal.read(self.journal_path))
        for model in dict.fromkeys([s.agent_model, s.meta_model]):
            if self.prices.free(model) and s.scripted is None:
                self._say(f"model {model!r} is priced at $0 "
                          f"({self.prices.describe(model)['source']}): budgets do not limit its calls")
        self._say(f"tasks: {self.splits.how}")
        self._say(start_of_run_power(s, len(self.accept_on)))
        try:
            if 0 not in self.state.generations or not self.state.generations[0].recorded:
                self._seed()
                self._say(self.forecast())
            for gen in range(1, s.generations + 1):
                existing = self.state.generations.get(gen)
                if existing is not None and existing.recorded:
                    continue
                self._check_stop()
                self._generation(gen)
                self._say(self.forecast())
        except StopRequested as stop:
            reason = str(stop)
            event = "budget_exhausted" if "budget" in reason else "run_stopped"
            # money spent on work that was discarded (a run cut off by the budget, a task with
            # an infrastructure error) still counts: the journal is brought to the spend log
            self.journal.append(event, reason=reason, **self._unjournaled())
            self.state = replay(Journal.read(self.journal_path))
            self._say(f"stopped: {reason}")
            return self.state
        self.journal.append("run_finished", reason=f"{s.generations} generations",
                            **self._unjournaled())
        self.state = replay(Journal.read(self.journal_path))
        return self.state

    def _seed(self) -> None:
        self.lineage.start(self.settings.base)
        gen0 = self.lineage.head(0)
        if 0 not in self.state.generations:
            self.journal.append("generation_started", generation=0, parent=None)
        agent = self._parent_agent(0)
        slots = self._slots(0, "decide")
        results = self.evaluate(0, agent, self.accept_on, slots)
        results |= self._evaluate_study_only(0, agent)
        shown = score(results, self._accept_ids, slots)
        held_out = self._held_out(0, agent)
        self.journal.append("proposal", generation=0, valid=True, reason="the seed agent")
        self.journal.append("decided", generation=0, verdict="accepted", reason="generation 0",
                            score=shown)
        self._record(0, gen0, shown, "accepted", "the seed agent", results, tree=agent.tree_hash,
                     extra=held_out)

    def _held_out(self, gen: int, agent: AgentSource) -> dict[str, Any]:
        """The best's score on the report-only split (``{}`` without one): one run of each of
        its tasks for generation 0 and each accepted generation, shown as the report's held-out
        curve, never used to decide."""
        if not self.report_on:
            return {}
        self._live_stage = f"report split ({len(self.report_on)} tasks)"
        slots = self._slots(gen, "baseline")[:1]
        results = self.evaluate(gen, agent, self.report_on, slots)
        return {"report_split": {"split": self.settings.report_split,
                                 **score(results, [t.instance_id for t in self.report_on], slots),
                                 "outcomes": self._outcomes(results)}}

    @property
    def _accept_ids(self) -> list[str]:
        return [t.instance_id for t in self.accept_on]

    def _evaluate_study_only(self, gen: int, agent: AgentSource) -> dict[tuple[str, int], dict]:
        """One run of each studied task that does not decide: evidence for the proposer."""
        deciding = set(self._accept_ids)
        extra = [t for t in self.study if t.instance_id not in deciding]
        return self.evaluate(gen, agent, extra, self._slots(gen, "decide")[:1]) if extra else {}

    def _record(self, gen: int, sha: str, score: dict, verdict: str, headline: str,
                results: dict[tuple[str, int], dict], *, tree: str, extra: dict | None = None) -> None:
        metrics = {"run": self.settings.run, "generation": gen, "sha": sha, "verdict": verdict,
                   "headline": headline, "score": score, "tree": tree,
                   "tasks": self._outcomes(results), "tampered": tampered_tasks(results),
                   "flagged": flagged_tasks(results), **(extra or {})}
        self.lineage.set_note(sha, metrics)
        if verdict == "accepted" and gen > 0:
            self.lineage.move_best(sha)
        out = self.run_dir / "gens" / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.journal.append("generation_recorded", generation=gen, sha=sha)
        self.state = replay(Journal.read(self.journal_path))
        if gen > 0:  # recorded: its branch keeps the code; the checkout is ~9 MB of nothing
            self.lineage.remove_worktree(gen)

    # -- one generation ------------------------------------------------------------------

    def _parent_agent(self, parent: int) -> AgentSource:
        """A recorded generation's agent; commits are immutable, so one copy per commit."""
        sha = self.lineage.head(parent)
        if sha not in self._agents:
            self._agents[sha] = resolve_agent(sha, repo_dir=self.workspace)
        return self._agents[sha]

    def _runs_of(self, gen: int, tasks: list[TaskSpec]) -> dict[str, dict]:
        """One run per task of a recorded generation: its fresh baseline where it has one."""
        tree = self._parent_agent(gen).tree_hash
        found: dict[str, dict] = {}
        for (task_id, _), result in self._results(
                tree, tasks, self._baseline_slots(gen) + self._slots(gen, "decide")).items():
            found.setdefault(task_id, result)
        return found

    def _evidence(self, parent: int):
        """The parent's evidence: study tasks only; no grader log where they also decide."""
        return collect_evidence(self._runs_of(parent, self.study), self.study,
                                grader_log=not self.splits.studies_deciding,
                                max_tokens=self.settings.evidence_tokens)

    smoke_test = True
    """Run the harness's smoke test on each candidate before its evaluation (`harness.propose.smoke`);
    off only in the test that shows what it catches."""

    def _selfcheck(self, worktree: Path) -> list[str]:
        """The harness's smoke test of the edited agent, then the agent's own self-check, in
        sandboxes (it is model-written code); a problem goes back to the model."""
        return check_candidate(worktree, self.study[0], self.grader.builder, smoke=self.smoke_test)

    def _propose(self, gen: int, parent: int, worktree: Path, tag: str = ""):
        """The meta model edits the agent (default), or, with ``proposer="self"``, the parent
        agent itself does, in a sandbox (the Darwin Gödel Machine's self-referential mode)."""
        evidence = self._evidence(parent)
        if self.settings.proposer == "self":
            key = f"gen-{gen:04d}.self{tag}"
            proposer = SelfProposer(DockerEnvironment(self.grader.builder,
                                                      timeout_s=self.settings.agent_timeout_s),
                                    self.agent_gateway, self.study[0],
                                    max_attempts=self.settings.max_proposal_attempts,
                                    extra_check=self._selfcheck, channel_key=key,
                                    generation=f"gen-{gen:04d}")
            result = self._guarded(lambda: proposer.propose(worktree, evidence,
                                                            read_agent_files(worktree)))
        else:
            key = f"gen-{gen:04d}.meta{tag}"
            channel = self.meta_gateway.open_channel(key, f"gen-{gen:04d}", tcp=True)
            try:
                client = OpenAIUpstream(channel.base_url, "ratchet", retry_seconds=0)
                proposer = MetaProposer(client, self.settings.meta_model,
                                        max_attempts=self.settings.max_proposal_attempts,
                                        extra_check=self._selfcheck)
                result = self._guarded(lambda: proposer.propose(worktree, evidence,
                                                                read_agent_files(worktree)))
            finally:
                self.meta_gateway.close_channel(channel)
        out = self.run_dir / "gens" / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"proposal{tag.replace('.', '-')}.json").write_text(json.dumps(
            {"proposer": self.settings.proposer, "valid": result.valid, "error": result.error,
             "messages": result.messages, "attempts": [asdict(a) for a in result.attempts]},
            indent=2, default=str))
        return result, self._spend_of(key)

    def _guarded(self, propose):
        try:
            return propose()
        except ModelCallFailed as exc:  # not the proposal's fault: stop, resumable
            self._check_stop()
            raise StopRequested(f"the proposer's model call failed: {exc}") from exc
        except Exception as exc:  # its sandbox removed under it by stop_now: a stop too
            if self.runner.cancelled.is_set():
                raise StopRequested("interrupted") from exc
            raise

    def _generation(self, gen: int) -> None:
        s = self.settings
        state = self.state.generations.get(gen)
        if state is None or state.parent is None:
            # one seeded draw per generation, recorded: a resumed run draws exactly the same
            selection_seed = f"{s.seed}:{gen}"
            parent = self.selector.select(self._archive(), random.Random(selection_seed)).number
            self.journal.append("generation_started", generation=gen, parent=parent,
                                selection_seed=selection_seed)
            self.state = replay(Journal.read(self.journal_path))
        else:
            parent = state.parent
        worktree = self.lineage.worktree(gen, self.lineage.branch(parent))
        state = self.state.generations[gen]
        if state.proposal_valid is None and s.proposals > 1:
            self._propose_several(gen, parent, worktree)
            state = self.state.generations[gen]
        elif state.proposal_valid is None:  # not journaled: what is in the worktree is torn
            self.lineage.reset(gen)
            self._say(f"gen {gen}: proposing a change of generation {parent}")
            result, spend = self._propose(gen, parent, worktree)
            headline = result.proposal.headline if result.valid else ""
            # journaled before any stop: a proposal that was paid for is used on resume
            self.journal.append("proposal", generation=gen, valid=result.valid,
                                reason=headline if result.valid else result.error,
                                diagnosis=result.proposal.diagnosis if result.valid else None,
                                flags=proposal_flags(worktree) if result.valid else [],
                                **spend)
            self.state = replay(Journal.read(self.journal_path))
            state = self.state.generations[gen]
            self._check_stop()
        if not state.proposal_valid:
            reason = f"invalid proposal: {state.proposal_reason}"
            self._say(f"gen {gen}: {reason}")
            self.journal.append("decided", generation=gen, verdict="rejected", reason=reason,
                                score=None)
            sha = self.lineage.commit(gen, message=f"invalid proposal\n\n{state.proposal_reason}",
                                      trailers={"Ratchet-Verdict": "invalid"}, allow_empty=True)
            self._record(gen, sha, {}, "invalid", reason, {}, tree="", extra=self._candidates_note(gen))
            return
        proposal = next((e for e in reversed(Journal.read(self.journal_path))
                         if e["event"] == "proposal" and e.get("generation") == gen), {})
        diagnosis = proposal.get("diagnosis") or ""
        headline = state.proposal_reason or "proposal"
        candidate = resolve_agent(str(worktree))
        decision, results, shown, selection = self._decide(gen, candidate)
        verdict = "accepted" if decision.accepted else "rejected"
        held_out = self._held_out(gen, candidate) if decision.accepted else {}
        self.journal.append("decided", generation=gen, verdict=verdict, reason=decision.reason,
                            score=shown, selection_score=selection)
        self._say(f"gen {gen}: {verdict}: {decision.reason}")
        message = diagnosis.strip() or headline  # the diagnosis opens with its headline
        sha = self.lineage.commit(gen, message=message, trailers={
            "Ratchet-Score": f"{shown['resolved']}/{shown['planned']}", "Ratchet-Verdict": verdict})
        self._record(gen, sha, shown, verdict, headline, results, tree=candidate.tree_hash,
                     extra={"parent": parent, "decision": asdict(decision),
                            "selection_score": selection, **self._candidates_note(gen), **held_out,
                            "proposal_flags": proposal.get("flags") or []})

    def _propose_several(self, gen: int, parent: int, worktree: Path) -> None:
        """``--proposals P``: P candidates from the parent, each on a branch of its own
        (`Lineage.candidate_branch`); each valid one is screened on one run per deciding task
        and the most resolved (the first on a tie) goes into the generation's worktree. Only
        it is then tested, on fresh runs: the screening draw never enters the test."""
        count = self.settings.proposals
        for index in range(1, count + 1):
            if index in self.state.generations[gen].candidates:
                continue
            self.lineage.reset(gen)
            self._say(f"gen {gen}: proposal {index}/{count}: a change of generation {parent}")
            result, spend = self._propose(gen, parent, worktree, tag=f".p{index}")
            headline = result.proposal.headline if result.valid else ""
            diagnosis = result.proposal.diagnosis if result.valid else None
            sha = (self.lineage.save_candidate(gen, index, (diagnosis or headline).strip() or headline)
                   if result.valid else None)
            self.journal.append("candidate", generation=gen, index=index, valid=result.valid,
                                reason=headline if result.valid else result.error, sha=sha,
                                diagnosis=diagnosis, **spend)
            self.state = replay(Journal.read(self.journal_path))
            self._check_stop()  # after the journal: a paid candidate is kept
        candidates = self.state.generations[gen].candidates
        valid = [c for _, c in sorted(candidates.items()) if c["valid"]]
        if not valid:
            why = "; ".join(f"{i}: {c['reason']}" for i, c in sorted(candidates.items()))
            self.journal.append("proposal", generation=gen, valid=False,
                                reason=f"none of the {count} proposals was valid ({why})")
            self.state = replay(Journal.read(self.journal_path))
            return
        screened: dict[int, int] = {}
        for c in valid:
            agent = resolve_agent(c["sha"], repo_dir=self.workspace)
            self._live_stage = f"screening proposal {c['index']}/{count}"
            runs = self.evaluate(gen, agent, self.accept_on, self._slots(gen, "screen", c["index"]))
            screened[c["index"]] = sum(1 for r in runs.values() if r["resolved"])
        chosen = max(valid, key=lambda c: (screened[c["index"]], -c["index"]))
        self._say(f"gen {gen}: screening resolved {screened}; testing proposal {chosen['index']} "
                  "on fresh runs")
        self.lineage.restore_candidate(gen, chosen["sha"])
        self.journal.append("proposal", generation=gen, valid=True, reason=chosen["reason"],
                            diagnosis=chosen["diagnosis"], chosen=chosen["index"],
                            flags=proposal_flags(worktree),
                            screened={str(k): v for k, v in screened.items()})
        self.state = replay(Journal.read(self.journal_path))

    def _candidates_note(self, gen: int) -> dict:
        """For metrics.json: all P candidates (branch, commit, validity) and which was chosen."""
        candidates = self.state.generations[gen].candidates
        if not candidates:
            return {}
        proposal = next((e for e in reversed(Journal.read(self.journal_path))
                         if e["event"] == "proposal" and e.get("generation") == gen), {})
        screened = proposal.get("screened") or {}
        return {"chosen": proposal.get("chosen"), "candidates": [
            {**c, "branch": self.lineage.candidate_branch(gen, i) if c.get("sha") else None,
             "screened_resolved": screened.get(str(i))} for i, c in sorted(candidates.items())]}

    def _best(self) -> tuple[int, dict[tuple[str, int], bool]]:
        """The best generation and its baseline pairs, running whatever of them is missing
        (a run from before fresh baselines, or one killed while making them)."""
        best_gen = max((n for n, g in self.state.generations.items()
                        if g.recorded and g.verdict == "accepted"), default=0)
        slots = self._baseline_slots(best_gen)
        self._live_stage = f"fresh baseline of gen {best_gen}"
        runs = self.evaluate(best_gen, self._parent_agent(best_gen), self.accept_on, slots)
        return best_gen, pairs(runs, self._accept_ids, slots)

    def _decide(self, gen: int, candidate: AgentSource):
        """Test `candidate` on fresh runs against the best's baseline, with futility looks;
        if accepted, run it K more times for its own fresh baseline. Returns the decision,
        the runs to record, the score to show (the fresh one when accepted) and the score of
        the deciding runs (the selection draw)."""
        best_gen, best = self._best()
        ids, by_id = self._accept_ids, {t.instance_id: t for t in self.accept_on}
        slots = self._slots(gen, "decide")
        self._live_best = f"{sum(best.values())}/{len(best)} (gen {best_gen}, fresh runs)"

        def run(keys):
            wanted = set(keys)
            for j in sorted({j for _, j in keys}):
                self._live_stage = f"attempt {j + 1}/{len(slots)}"
                self.evaluate(gen, candidate, [by_id[t] for t, k in keys if k == j], [slots[j]])
            made = pairs(self._results(candidate.tree_hash, self.accept_on, slots), ids, slots)
            return {key: value for key, value in made.items() if key in wanted}

        # a seeded shuffle: each look sees a random sample of the tasks, not the suite's first
        # package; the same order again on resume
        shuffled = random.Random(f"{self.settings.seed}:{gen}").sample(ids, len(ids))
        order = [(task_id, j) for j in range(len(slots)) for task_id in shuffled]
        decision = decide_in_looks(self.rule, order, run, best, generation=gen,
                                   generations=self.horizon or None)
        results = self._results(candidate.tree_hash, self.accept_on, slots)
        decision = gate(decision, results)  # a tampering agent is never accepted
        selection = score(results, ids, slots)
        if decision.stopped_after is not None:
            self._say(f"gen {gen}: futility look: no gain after {decision.stopped_after} of "
                      f"{decision.planned} runs; stopping early")
            return decision, results, selection, selection
        study = self._evaluate_study_only(gen, candidate)
        if not decision.accepted:
            return decision, results | study, selection, selection
        fresh_slots = self._slots(gen, "baseline")
        self._live_stage = "fresh baseline"
        self._say(f"gen {gen}: accepted; {len(fresh_slots)} fresh run(s) of each deciding task "
                  "become its baseline (the deciding runs are a selection draw)")
        fresh = self.evaluate(gen, candidate, self.accept_on, fresh_slots)
        decision = gate(decision, fresh)  # tampering on its fresh runs rejects it all the same
        if not decision.accepted:
            return decision, results | fresh | study, selection, selection
        return decision, fresh | study, score(fresh, ids, fresh_slots), selection
