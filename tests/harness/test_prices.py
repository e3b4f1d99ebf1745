"""Prices from a maintained source, and a model with no price never counted as free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import load_suite
from harness.models.oracle import oracle_script
from harness.models.prices import PriceTable, unpriced_refusal
from harness.models.scripted_model import ScriptedModelServer

RATCHET = str(Path(sys.executable).with_name("ratchet"))
UNPRICED = "nobody-priced-this-model-7"
REPO = Path(__file__).resolve().parents[2]
"""Holds agent_seed/: the agent `bench run` evaluates."""


def test_the_database_prices_known_models_offline_and_user_prices_win(tmp_path, monkeypatch):
    """genai-prices' bundled data answers with no network; a provider-prefixed name is
    found; the user's price wins; an unknown model has no price (None, never 0)."""
    monkeypatch.delenv("RATCHET_PRICES", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any network use would fail
    table = PriceTable.load()
    assert table.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert table.cost("openai/gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("claude-sonnet-4-5", 1000, 0) > 0
    assert table.cost(UNPRICED, 10, 10) is None and not table.known(UNPRICED)
    assert table.free("scripted") and not table.free("gpt-4o")
    described = table.describe("gpt-4o")
    assert described["source"].startswith("genai-prices") and described["input_usd_per_mtok"] == 2.5

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o": [1, 2], "my-local-vllm": [0, 0]}))
    mine = PriceTable.load(prices, extra={"qwen-coder": [0.2, 0.6]})
    assert mine.cost("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)
    assert mine.free("my-local-vllm") and mine.known("qwen-coder")
    snapshot = mine.snapshot(["gpt-4o", "qwen-coder", UNPRICED])
    assert snapshot["gpt-4o"]["source"] == f"RATCHET_PRICES={prices}"
    assert snapshot["qwen-coder"]["source"] == "the run's prices setting"
    assert snapshot[UNPRICED] == {"source": None, "unpriced": True}

    with pytest.raises(ValueError, match="give \\[usd_per_million_input_tokens"):
        PriceTable.load(extra={"bad": "cheap"})


def test_unpriced_refusal_names_the_model_and_both_fixes():
    message = unpriced_refusal(PriceTable.load(), {"agent": UNPRICED, "meta": "gpt-4o"})
    assert f"'{UNPRICED}' (agent)" in message and "gpt-4o" not in message.split(":")[0]
    assert "RATCHET_PRICES" in message and "--allow-unpriced" in message
    assert unpriced_refusal(PriceTable.load(), {"agent": "gpt-4o-mini"}) is None


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RATCHET_PRICES"))}
    return {**base, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "x",
            "RATCHET_RUNS": str(tmp_path / "runs"), "COLUMNS": "200"}


@pytest.mark.parametrize("command", [
    ["run", "--suite", "quickstart", "--model", UNPRICED, "--run-id", "u1"],
    ["run", "--suite", "quickstart", "--model", "gpt-4o-mini", "--meta-model", UNPRICED, "--run-id", "u1"],
    ["bench", "run", "--suite", "quickstart", "--model", UNPRICED, "--run-id", "u1"],
], ids=["run-agent", "run-meta", "bench-run"])
def test_an_unpriced_model_is_refused_before_anything_starts(tmp_path, env, command):
    """A model with no price stops `ratchet run` / `bench run` before any file is written,
    with one message naming the model and the fixes; never a run counted at $0."""
    ws = tmp_path / "ws"
    assert subprocess.run([RATCHET, "init", str(ws)], capture_output=True).returncode == 0
    out = subprocess.run([RATCHET, *command], cwd=ws, env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stdout + out.stderr
    assert UNPRICED in out.stderr and "RATCHET_PRICES" in out.stderr
    assert "--allow-unpriced" in out.stderr
    assert not (ws / "runs" / "u1").exists() and not (tmp_path / "runs" / "bench" / "u1").exists()


@pytest.mark.docker
def test_allow_unpriced_runs_and_reports_cost_as_unknown(tmp_path, env):
    """With --allow-unpriced the run goes on and its cost reads "unknown", never $0."""
    task = load_suite("quickstart").tasks[0]
    suite = tmp_path / "one.jsonl"
    suite.write_text(task.model_dump_json(exclude_none=True) + "\n")
    with ScriptedModelServer(oracle_script([task])) as model:
        out = subprocess.run([RATCHET, "bench", "run", "--suite", str(suite), "--model", UNPRICED,
                              "--allow-unpriced", "--run-id", "u2", "--agent", str(REPO)], cwd=tmp_path,
                             env={**env, "OPENAI_BASE_URL": model.base_url}, capture_output=True,
                             text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "cost unknown" in out.stdout and "unknown" in out.stdout
    summary = json.loads((tmp_path / "runs" / "bench" / "u2" / "summary.json").read_text())
    assert summary["cost_usd"] is None and summary["unpriced_calls"] == 3
    spend = (tmp_path / "runs" / "bench" / "u2" / "spend.jsonl").read_text().splitlines()
    assert len(spend) == 3 and all(json.loads(line)["unpriced_calls"] == 1 for line in spend)
