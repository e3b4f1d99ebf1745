"""Building a run's controller: the one place the loop's collaborators are made and wired.

The controller (`harness.loop.controller`) is the algorithm alone; this function reads the
run's folder, opens its journal and spend log, prices its models, makes the two gateways
(the agent's, the meta model's), the task runner with its Docker sandbox, the executor, the
proposer's access, the split of the tasks and the git lineage, and hands them over. The CLI
(``ratchet run``, ``resume``, ``demo``) and the tests call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from benchmark import DockerEnvironment, Grader, TaskSpec
from harness.loop.acceptance import parse_rule
from harness.loop.controller import Controller
from harness.loop.evaluation import Evaluation
from harness.loop.lineage import Lineage
from harness.loop.propose_step import ProposeStep
from harness.loop.proposals import Proposals
from harness.loop.records import Recorder
from harness.loop.runlog import RunLog
from harness.loop.selection import parse_selector
from harness.loop.settings import LoopSettings
from harness.loop.spend import RunSpend
from harness.loop.splits import check_unchanged, plan_splits, start_of_run_power
from harness.loop.workload import Workload
from harness.models.gateway import Budget, Gateway
from harness.models.ledger import Ledger
from harness.models.prices import PriceTable
from harness.protocols import Executor, ModelClient
from harness.run.evaluate import TaskRunner
from harness.run.executors import parse_executor

__all__ = ["build_controller"]


def build_controller(workspace: Path, settings: LoopSettings, tasks: list[TaskSpec], grader: Grader,
                     agent_upstream: ModelClient, meta_upstream: ModelClient, *,
                     on_event: Callable[[str], None] = lambda message: None,
                     executor: Executor | None = None) -> Controller:
    """The controller of run ``settings.run`` in ``workspace`` (new, or resumed from its
    journal), its agent's calls going to ``agent_upstream`` and the proposer's to
    ``meta_upstream``; ``executor`` defaults to ``settings.executor``."""
    s = settings
    run_dir = workspace / "runs" / s.run
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / "journal.jsonl")
    lineage = Lineage(workspace, s.run)
    rule, selector = parse_rule(s.acceptance), parse_selector(s.selector)
    # the true spend: every call the gateways settled, on disk as it happened
    spend = RunSpend(Ledger.open(run_dir / "spend.jsonl"), s.budget_usd)
    spend.carry_journaled(log.state)
    prices = PriceTable.load(extra=s.prices)
    (run_dir / "prices.json").write_text(json.dumps(
        prices.snapshot([s.agent_model, s.meta_model]), indent=2))
    budget, logs = Budget(per_task=s.task_budget_usd, per_run=s.budget_usd), run_dir / "trajectories"
    agent_gateway = Gateway(agent_upstream, model=s.agent_model, log_dir=logs, budget=budget,
                            ledger=spend.ledger, prices=prices, max_output_tokens=s.max_output_tokens)
    meta_gateway = Gateway(meta_upstream, model=s.meta_model, log_dir=logs / "meta", budget=budget,
                           ledger=spend.ledger, prices=prices, max_output_tokens=s.max_output_tokens)
    meta_gateway.replay_paid = True  # a paid proposal is not bought twice on resume
    runner = TaskRunner(agent_gateway, grader, DockerEnvironment(grader.builder, timeout_s=s.agent_timeout_s),
                        run_dir / "agent-logs")
    executor = executor or parse_executor(s.executor, workers=s.workers, on_event=on_event)
    # the one place the run's tasks are split (harness.loop.splits; the CLI validated the options)
    splits = plan_splits(tasks, study=s.study, decide=s.decide, report=s.report_split,
                         holdout=s.holdout, seed=s.seed)
    recorded = run_dir / "splits.json"
    if recorded.is_file():
        check_unchanged(splits, json.loads(recorded.read_text()))
    recorded.write_text(json.dumps(splits.as_dict(), indent=2))

    evaluation = Evaluation(runner, executor, log, spend, say=on_event)
    proposals = Proposals(s.proposer, s.meta_model, meta_gateway, agent_gateway, grader.builder,
                          splits.study[0], run_dir / "gens", spend, cancelled=runner.cancelled,
                          max_attempts=s.max_proposal_attempts, agent_timeout_s=s.agent_timeout_s)

    def intro() -> list[str]:
        free = [f"model {model!r} is priced at $0 ({prices.describe(model)['source']}): budgets "
                "do not limit its calls" for model in dict.fromkeys([s.agent_model, s.meta_model])
                if prices.free(model) and s.scripted is None]
        return free + [f"tasks: {splits.how}", start_of_run_power(s, len(splits.decide))]

    workload = Workload(evaluation, splits, lineage, workspace, s.attempts, s.report_split)
    propose = ProposeStep(proposals, lineage, log, spend, workload, splits, count=s.proposals,
                          evidence_tokens=s.evidence_tokens, say=on_event)
    return Controller(settings=s, log=log, lineage=lineage, splits=splits, rule=rule,
                      selector=selector, spend=spend, evaluation=evaluation, propose=propose,
                      recorder=Recorder(s.run, run_dir, lineage, log), workload=workload,
                      say=on_event, intro=intro)
