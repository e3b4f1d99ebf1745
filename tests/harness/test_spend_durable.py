"""Spend is durable as it happens: a real `ratchet run` process, priced scripted models
(one endpoint in this test process, slow enough that calls are in flight), killed with
SIGKILL mid-evaluation and resumed at the same budget. The budget holds beyond only the
calls in flight at the kill, the journal's spend equals the spend log's to the cent, and a
proposal that was paid for is never asked for again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import load_suite
from harness.cli.demo import SEED_FENCE, WIDE_FENCE, demo_agent_script, demo_meta_script
from harness.loop.journal import Journal, replay
from harness.models.scripted_model import Script, ScriptedModelServer

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))
BASH_TASKS = ("isodate__isodate-0.7.2__leap-century-month-add",
              "isodate__isodate-0.7.2__december-month-carry",
              "isodate__isodate-0.7.2__negative-tz-offset-minutes")
PRICE = [1.0, 100.0]  # USD per million tokens
AGENT_CALL = (1000 * PRICE[0] + 100 * PRICE[1]) / 1e6  # the demo's fixed usage: $0.011
META_CALL = (6000 * PRICE[0] + 400 * PRICE[1]) / 1e6  # $0.046
BUDGET = 0.19


class _SlowScript(Script):
    """The demo's answers, each after a second: a kill lands with calls in flight."""

    def respond(self, request):
        time.sleep(1.0)
        return super().respond(request)


def _paid(requests: list[dict]) -> float:
    """What the endpoint was asked for (and would bill): every request that reached it."""
    def is_meta(body):
        return any(SEED_FENCE in str(m.get("content")) or WIDE_FENCE in str(m.get("content"))
                   for m in body["messages"])
    return sum(META_CALL if is_meta(body) else AGENT_CALL for body in requests)


def _logged(run_dir: Path) -> float:
    path = run_dir / "spend.jsonl"
    if not path.exists():
        return 0.0
    return sum(json.loads(line)["cost_usd"] for line in path.read_text().splitlines())


def test_kill_then_resume_keeps_spend_true_and_the_budget(tmp_path):
    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    slice_ = [tasks[i] for i in BASH_TASKS]
    suite = tmp_path / "slice.jsonl"
    suite.write_text("".join(t.model_dump_json(exclude_none=True) + "\n" for t in slice_))
    out = subprocess.run([RATCHET, "init", str(tmp_path / "ws")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    workspace = tmp_path / "ws"
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"priced": PRICE}))
    run_dir = workspace / "runs" / "m1"
    script = _SlowScript(rules=[*demo_meta_script().rules, *demo_agent_script(slice_).rules])
    with ScriptedModelServer(script) as model:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
               "OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "x",
               "RATCHET_PRICES": str(prices), "COLUMNS": "200"}

        def ratchet(*args: str, budget: float = BUDGET) -> subprocess.CompletedProcess:
            return subprocess.run([RATCHET, *args, "--budget-usd", str(budget)], cwd=workspace,
                                  env=env, capture_output=True, text=True, timeout=900)

        proc = subprocess.Popen([RATCHET, "run", "--suite", str(suite), "--generations", "1",
                                 "--model", "priced", "--meta-model", "priced", "--run-id", "m1",
                                 "--workers", "2", "--acceptance", "strict",
                                 "--max-output-tokens", "500", "--budget-usd", str(BUDGET)],
                                cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        journal = run_dir / "journal.jsonl"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:  # kill after some durable spend, mid-call
            if journal.exists() and '"task_evaluated"' in journal.read_text() \
                    and _paid(model.requests) - _logged(run_dir) > 1e-9:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.5)  # the calls in flight at the kill reach the endpoint and are paid
        in_flight = _paid(model.requests) - _logged(run_dir)
        assert in_flight > 0, "the kill landed with no call in flight: the test proves nothing"
        assert not replay(Journal.read(journal)).ended

        resumed = ratchet("resume", "m1")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        state = replay(Journal.read(journal))
        assert state.end_reason.startswith("budget_exhausted"), state.end_reason
        logged = _logged(run_dir)
        # the budget holds: what is logged never passes it; what the endpoint was asked for
        # passes it by at most the calls that were in flight at the kill
        assert logged <= BUDGET
        assert _paid(model.requests) <= BUDGET + in_flight + 1e-9
        # the journal's spend is the spend log's, to the cent (no stop counts anything twice)
        assert round(state.spent_usd, 2) == round(logged, 2)
        status = subprocess.run([RATCHET, "status", "m1"], cwd=workspace, env=env,
                                capture_output=True, text=True)
        assert f"spent ${logged:.4f}" in status.stdout, status.stdout
        # the resumed run used its budget instead of stopping early on a double count
        assert logged >= BUDGET - 0.1
        # a budget stop says what was spent, whether or not the seed was recorded before it
        assert "forecast: $" in resumed.stdout, resumed.stdout

        finished = ratchet("resume", "m1", budget=1.0)
        assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
        state = replay(Journal.read(journal))
        assert state.end_reason.startswith("run_finished"), state.end_reason
        assert round(state.spent_usd, 2) == round(_logged(run_dir), 2)
        meta_calls = [r for r in model.requests
                      if any(SEED_FENCE in str(m.get("content")) for m in r["messages"])]
        assert len(meta_calls) == 1  # a paid proposal is kept, never asked for again
    snapshot = json.loads((run_dir / "prices.json").read_text())
    assert snapshot["priced"]["input_usd_per_mtok"] == PRICE[0]
    assert snapshot["priced"]["source"].startswith("RATCHET_PRICES=")


def _ask(gateway, channel, text: str) -> int:
    import httpx2

    transport = httpx2.HTTPTransport(uds=str(channel.socket_path))
    with httpx2.Client(transport=transport) as client:
        return client.post("http://gateway/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": text}]}).status_code


@pytest.mark.parametrize("replay", [True, False], ids=["replay-on", "replay-off"])
def test_a_paid_answer_is_not_bought_twice_after_a_kill(tmp_path, replay):
    """Invariant: a meta-model answer paid for by a process killed before it journaled the
    proposal is served again from the trajectory on resume, at no new cost; each paid
    answer once, to exactly the same request. With replay off it is bought again."""
    from harness.models.gateway import Gateway, OpenAIUpstream
    from harness.models.ledger import Ledger
    from harness.models.prices import PriceTable

    def gateway(upstream):
        made = Gateway(OpenAIUpstream(upstream.base_url, "k"), model="priced", log_dir=tmp_path / "meta",
                       prices=PriceTable({"priced": PRICE}), ledger=Ledger.open(tmp_path / "spend.jsonl"),
                       max_output_tokens=500)
        made.replay_paid = replay
        return made

    with ScriptedModelServer({"default": "an answer"}) as upstream:
        first = gateway(upstream)
        channel = first.open_channel("gen-0001.meta", "gen-0001")
        assert _ask(first, channel, "propose a change") == 200
        first.close_channel(channel)  # the process dies here, the proposal never journaled
        paid_before = len(upstream.requests)

        second = gateway(upstream)
        channel = second.open_channel("gen-0001.meta", "gen-0001")
        try:
            assert _ask(second, channel, "propose a change") == 200
            bought_again = len(upstream.requests) - paid_before
            assert _ask(second, channel, "propose a change") == 200  # a second ask is new
            assert _ask(second, channel, "something else") == 200
        finally:
            second.close_channel(channel)
    spend = (tmp_path / "spend.jsonl").read_text().splitlines()
    if replay:
        assert bought_again == 0 and len(upstream.requests) == 3 and len(spend) == 3
        assert second.ledger.run.calls == 3  # 1 from the log + the 2 new ones; the replay is free
    else:
        assert bought_again == 1 and len(upstream.requests) == 4 and len(spend) == 4


def test_kill_after_the_proposal_was_paid_then_resume_buys_it_once(tmp_path):
    """kill -9 of a real run after the meta model answered but before the proposal was
    journaled (its edits in their checks): the resumed run uses the paid answer; the meta
    model is asked once, and the journal's spend is the spend log's."""
    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    slice_ = [tasks[i] for i in BASH_TASKS[:2]]
    suite = tmp_path / "slice.jsonl"
    suite.write_text("".join(t.model_dump_json(exclude_none=True) + "\n" for t in slice_))
    assert subprocess.run([RATCHET, "init", str(tmp_path / "ws")], capture_output=True).returncode == 0
    workspace, run_dir = tmp_path / "ws", tmp_path / "ws" / "runs" / "m2"
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"priced": PRICE}))
    script = Script(rules=[*demo_meta_script().rules, *demo_agent_script(slice_).rules])
    with ScriptedModelServer(script) as model:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
               "OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "x",
               "RATCHET_PRICES": str(prices), "COLUMNS": "200"}
        proc = subprocess.Popen([RATCHET, "run", "--suite", str(suite), "--generations", "1",
                                 "--model", "priced", "--meta-model", "priced", "--run-id", "m2",
                                 "--acceptance", "strict", "--max-output-tokens", "500"],
                                cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        meta = run_dir / "trajectories" / "meta" / "gen-0001.meta.jsonl"
        journal = run_dir / "journal.jsonl"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if meta.exists() and '"response"' in meta.read_text():
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not any(e["event"] == "proposal" and e["generation"] == 1
                       for e in Journal.read(journal)), "killed too late: the proposal was journaled"
        resumed = subprocess.run([RATCHET, "resume", "m2"], cwd=workspace, env=env,
                                 capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        meta_calls = [r for r in model.requests
                      if any(SEED_FENCE in str(m.get("content")) for m in r["messages"])]
    state = replay(Journal.read(journal))
    assert state.end_reason.startswith("run_finished") and state.generations[1].proposal_valid
    assert len(meta_calls) == 1
    assert round(state.spent_usd, 2) == round(_logged(run_dir), 2)
    assert sum(1 for line in (run_dir / "spend.jsonl").read_text().splitlines()
               if "gen-0001.meta" in line) == 1


def test_a_stop_in_the_middle_of_a_generation_counts_spend_once(tmp_path):
    """Invariant: a run that stops mid-generation (here: a task with infrastructure errors
    on both tries, after the others were journaled) journals exactly the spend log's total.
    The old stop record added `ledger - state.spent_usd` with a state that had not seen the
    generation's task records yet, counting their spend twice."""
    from benchmark import Grader, ImageBuilder, InfraError
    from harness.models.gateway import OpenAIUpstream
    from harness.loop.compose import build_controller
    from harness.loop.settings import LoopSettings

    class _Broken:
        """The real environment, except that the daemon always fails for one task."""

        def __init__(self, inner):
            self.inner = inner

        def run_agent(self, task, agent_dir, **options):
            if task.instance_id == BASH_TASKS[1]:
                raise InfraError("the Docker daemon hiccuped (injected)")
            return self.inner.run_agent(task, agent_dir, **options)

    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    slice_ = [tasks[i] for i in BASH_TASKS]
    assert subprocess.run([RATCHET, "init", str(tmp_path / "ws")], capture_output=True).returncode == 0
    workspace = tmp_path / "ws"
    with ScriptedModelServer(demo_agent_script(slice_)) as model:
        settings = LoopSettings(run="s1", suite="slice", generations=0, agent_model="priced",
                                meta_model="priced", workers=2, prices={"priced": PRICE},
                                max_output_tokens=500)
        controller = build_controller(workspace, settings, slice_, Grader(ImageBuilder(), tmp_path / "g"),
                                      OpenAIUpstream(model.base_url, "x"), OpenAIUpstream(model.base_url, "x"))
        controller.evaluation.runner.environment = _Broken(controller.evaluation.runner.environment)
        state = controller.run()
    assert state.ended and "infrastructure errors" in state.end_reason
    assert len(state.evaluations) == 2
    logged = _logged(workspace / "runs" / "s1")
    assert logged == pytest.approx(6 * AGENT_CALL)  # two tasks, three calls each
    assert round(state.spent_usd, 2) == round(logged, 2)
    assert state.spent_usd == pytest.approx(logged)
