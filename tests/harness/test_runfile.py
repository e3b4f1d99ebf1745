"""The run file (`harness.loop.runfile`) and `ratchet run -c`: sources merge in a fixed order, every
bad field is one line naming where it came from, and a bad value stops the run before anything
of it is written. No Docker: the CLI is stopped by validation before any sandbox."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from harness.loop.journal import Journal
from harness.loop.runfile import RunFileError, from_settings, load_sources, resolve
from harness.loop.settings import LoopSettings, to_settings
from tests.conftest import ROOT
from tests.harness.conftest import new_workspace

RATCHET = str(Path(sys.executable).with_name("ratchet"))
EXAMPLE = ROOT / "examples" / "run.yaml"


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _ratchet(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, "COLUMNS": "300", **(env or {})})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return new_workspace(tmp_path_factory.mktemp("rf") / "ws")


def _nothing_written(workspace: Path) -> bool:
    """Nothing in runs/ but its README and the runs the tests made up (fab-*)."""
    runs = workspace / "runs"
    return not any(p.name != "README.md" and not p.name.startswith("fab-") for p in runs.iterdir())


def _made_up_run(workspace: Path, run: str, settings: LoopSettings) -> Path:
    """A run's folder as `ratchet run` leaves it: settings.json and a journal."""
    run_dir = workspace / "runs" / run
    run_dir.mkdir(parents=True)
    settings.save(run_dir / "settings.json")
    Journal(run_dir / "journal.jsonl").append("run_started", run=run, resumed=False)
    return run_dir


# -- merging ------------------------------------------------------------------------------

def test_flags_override_overrides_which_override_files_which_override_defaults(tmp_path):
    base = _write(tmp_path / "base.yaml", {"suite": "quickstart", "generations": 5, "seed": 1,
                                           "models": {"agent": {"name": "a", "kwargs": {"temperature": 0.1}},
                                                      "meta": {"name": "m"}}})
    over = _write(tmp_path / "over.yaml", {"seed": 2, "models": {"meta": {"kwargs": {"top_p": 0.5}}}})
    config = resolve([str(base), str(over), "seed=3", "models.meta.kwargs.temperature=0.2"],
                     {"generations": 7})
    assert (config.generations, config.seed, config.attempts) == (7, 3, 1)  # flag, -c, default
    assert config.models.agent.kwargs == {"temperature": 0.1}  # deep merge keeps what later files omit
    assert config.models.meta.name == "m"
    assert config.models.meta.kwargs == {"top_p": 0.5, "temperature": 0.2}
    settings = to_settings(config, "r1")
    assert (settings.agent_model, settings.meta_model, settings.horizon) == ("a", "m", 7)
    assert settings.meta_kwargs == {"top_p": 0.5, "temperature": 0.2}


def test_meta_model_defaults_to_the_agents_and_scripted_names_both_scripted():
    settings = to_settings(resolve([], {"suite": "q", "models.agent.name": "x"}), "r")
    assert (settings.agent_model, settings.meta_model) == ("x", "x")
    settings = to_settings(resolve([], {"suite": "q", "scripted": "demo"}), "r")
    assert (settings.agent_model, settings.meta_model) == ("scripted", "scripted")


def test_a_run_file_round_trips_through_a_runs_settings(tmp_path):
    """What `ratchet status` shows is a run file that makes the same settings again."""
    settings = to_settings(resolve([str(EXAMPLE), "scripted=null", "models.meta.base_url=http://m:1/v1",
                                    "models.meta.api_key_env=META_KEY",
                                    "models.meta.kwargs.reasoning_effort=high"]), "r2")
    shown = _write(tmp_path / "shown.yaml", from_settings(settings))
    again = to_settings(resolve([str(shown)]), "r2")
    assert again == settings


def test_old_settings_json_loads_and_shows_as_a_valid_run_file(tmp_path):
    old = {"run": "r", "suite": "quickstart", "generations": 12, "agent_model": "m",
           "meta_model": "m", "acceptance": "mcnemar:0.05", "stage_size": 3}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    settings = LoopSettings.load(tmp_path / "settings.json")
    assert settings.agent_kwargs == {} and settings.meta_base_url is None
    settings.check()
    assert resolve([str(_write(tmp_path / "s.yaml", from_settings(settings)))]).generations == 12


# -- one line per bad field ---------------------------------------------------------------

def test_a_bad_file_gives_one_line_per_bad_field_naming_file_key_and_what_is_allowed(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {
        "suite": "quickstart", "generations": -2, "attempts": 0, "budget_usd": -5,
        "proposer": "oracle", "gnerations": 3,
        "models": {"agent": {"api_key_env": "sk-live-0123456789", "base_url": "localhost:8000"},
                   "meta": {"kwargs": {"model": "other"}}}})
    with pytest.raises(RunFileError) as info:
        resolve([str(bad)])
    problems = info.value.problems
    assert len(problems) == 8, problems
    assert all(p.startswith(f"{bad}: ") for p in problems)
    text = "\n".join(problems)
    assert "generations must be an integer >= 0, got -2" in text
    assert "attempts must be an integer in 1..99, got 0" in text
    assert "budget_usd must be a number > 0 (or null), got -5" in text
    assert "proposer: must be 'meta' or 'self', got 'oracle'" in text
    assert "gnerations is not a setting; did you mean 'generations'?" in text
    assert "models.agent.base_url: must be an http:// or https:// URL" in text
    assert "models.meta.kwargs: model cannot be set here" in text
    assert "models.agent.api_key_env: must be the name of an environment variable" in text
    assert "sk-live-0123456789" not in text  # a key pasted in the wrong place is never echoed


@pytest.mark.parametrize("source, message", [
    ("nope.yaml", "nope.yaml: no such run file"),
    ("- a\n- b\n", "a run file is a mapping of settings"),
    ("suite: [unclosed\n", "not valid YAML"),
])
def test_an_unreadable_run_file_is_one_clear_error(tmp_path, source, message):
    path = tmp_path / "nope.yaml" if source == "nope.yaml" else _write(tmp_path / "r.yaml", source)
    with pytest.raises(RunFileError) as info:
        load_sources([str(path)])
    assert message in str(info.value)


def test_override_without_a_file_of_that_name_sets_a_dotted_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    merged, origins = load_sources(["models.agent.kwargs.top_k=7", "budget_usd="])
    assert merged == {"models": {"agent": {"kwargs": {"top_k": 7}}}, "budget_usd": None}
    assert origins["models.agent.kwargs.top_k"] == "-c"


# -- the CLI --------------------------------------------------------------------------------

def test_ratchet_run_with_a_bad_run_file_exits_2_with_each_problem_and_writes_nothing(workspace, tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"suite": "quickstart", "scripted": "demo",
                                         "generations": -1, "workers": 0, "seeed": 4})
    out = _ratchet("run", "-c", str(bad), cwd=workspace)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stderr.split())
    assert "3 problems in the run's settings" in text
    for expected in ("generations must be an integer >= 0", "workers must be an integer in 1..256",
                     "seeed is not a setting; did you mean 'seed'?"):
        assert expected in text
    assert _nothing_written(workspace)


@pytest.mark.parametrize("args, message", [
    (["--holdout", "-1"], "--holdout -1: holdout must be an integer >= 0"),
    (["--holdout", "9"], "--holdout 9 is out of range"),
    (["--budget-usd", "-5"], "--budget-usd -5.0: budget_usd must be a number > 0 (or null)"),
    (["--task-budget-usd", "0"], "--task-budget-usd 0.0: task_budget_usd must be a number > 0 (or null)"),
    (["--generations", "-1"], "--generations -1: generations must be an integer >= 0"),
    (["--attempts", "-2"], "--attempts -2: attempts must be an integer in 1..99"),
    (["--proposals", "-1"], "--proposals -1: proposals must be an integer in 1..39"),
    (["--workers", "0"], "--workers 0: workers must be an integer in 1..256"),
    (["--max-proposal-attempts", "0"], "--max-proposal-attempts 0: max_proposal_attempts must be an integer in 1..20"),
    (["--evidence-tokens", "-1"], "--evidence-tokens -1: evidence_tokens must be an integer in 500..1000000"),
    (["--agent-timeout-s", "-3"], "--agent-timeout-s -3.0: agent_timeout_s must be a number > 0 and <= 86400"),
    (["--executor", "k8s"], "--executor k8s: executor: must be local, ray, ray:auto or ray:HOST:PORT"),
])
def test_each_bad_option_value_is_one_clear_error_before_anything_is_written(workspace, args, message):
    out = _ratchet("run", "--suite", "quickstart", "--scripted", "demo", *args, cwd=workspace)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stderr.split())
    assert message in text and text.count("error:") == 1, text
    assert _nothing_written(workspace)


def test_flags_win_over_the_run_file_in_the_error_too(workspace, tmp_path):
    """The file says generations 2 (fine); the flag's bad value is named as the flag."""
    out = _ratchet("run", "-c", str(EXAMPLE), "--generations", "-4", cwd=workspace)
    assert out.returncode == 2 and "--generations -4: generations must be an integer >= 0" in out.stderr


def test_no_endpoint_and_a_missing_key_variable_are_named_before_anything_is_written(workspace):
    out = _ratchet("run", "--suite", "quickstart", cwd=workspace)
    assert out.returncode == 2 and "no endpoint for the agent model" in " ".join(out.stderr.split())
    out = _ratchet("run", "--suite", "quickstart", "-c", "models.meta.base_url=http://127.0.0.1:9/v1",
                   "-c", "models.meta.api_key_env=RATCHET_TEST_UNSET_KEY",
                   cwd=workspace, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    text = " ".join(out.stderr.split())
    assert out.returncode == 2 and "models.meta.api_key_env names RATCHET_TEST_UNSET_KEY" in text
    assert "export RATCHET_TEST_UNSET_KEY=" in text
    assert _nothing_written(workspace)


def test_init_commits_the_example_run_file(workspace):
    written = (workspace / "run.yaml").read_text()
    assert written == EXAMPLE.read_text()
    assert "run.yaml" in git.Repo(workspace).git.ls_files().split()
    assert written.count("#") > 30  # commented: every setting says what it does


def test_status_shows_the_runs_resolved_settings_as_a_run_file(workspace, tmp_path):
    settings = to_settings(resolve([str(EXAMPLE), "scripted=null", "task_budget_usd=0.25",
                                    "models.agent.base_url=http://127.0.0.1:8000/v1",
                                    "models.meta.api_key_env=META_KEY",
                                    "models.meta.kwargs.reasoning_effort=high"]), "fab-shown")
    _made_up_run(workspace, "fab-shown", settings)
    out = _ratchet("status", "fab-shown", cwd=workspace)
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout.split("takes it):\n", 1)[1])
    assert shown["task_budget_usd"] == 0.25 and shown["run_id"] == "fab-shown"
    assert shown["models"]["agent"]["base_url"] == "http://127.0.0.1:8000/v1"
    assert shown["models"]["meta"] == {"name": "gpt-4o-mini", "base_url": None,
                                       "api_key_env": "META_KEY",
                                       "kwargs": {"reasoning_effort": "high"}}


def test_the_readmes_run_file_examples_are_valid_run_files(tmp_path):
    """The README promises its run files work: each YAML block there validates."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert blocks
    for number, block in enumerate(blocks):
        config = resolve([str(_write(tmp_path / f"readme-{number}.yaml", block))])
        assert config.models.agent.api_key_env and config.models.meta.api_key_env


@pytest.mark.parametrize("args, message", [
    (["--budget-usd", "-5"], "--budget-usd -5.0: budget_usd must be a number > 0 (or null)"),
    (["--generations", "-1"], "--generations -1: generations must be an integer >= 0"),
    (["--executor", "slurm"], "--executor slurm: executor: must be local, ray, ray:auto or ray:HOST:PORT"),
])
def test_resume_refuses_a_bad_new_value_and_leaves_the_run_as_it_was(workspace, args, message):
    run = f"fab-resume-{args[0][2:]}"
    run_dir = _made_up_run(workspace, run, to_settings(resolve([str(EXAMPLE)]), run))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    out = _ratchet("resume", run_dir.name, *args, cwd=workspace)
    assert out.returncode == 2 and message in " ".join(out.stderr.split()), out.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_prices_in_a_run_file_price_a_model_and_a_bad_entry_is_named(tmp_path):
    """`prices:` in the run file (the fix the unpriced refusal names) reaches the run's
    settings and prices the model; a bad entry is one line naming it."""
    from harness.models.prices import PriceTable

    path = _write(tmp_path / "run.yaml", "suite: quickstart\nprices: {my-vllm: [0, 0], proxy/claude: [3, 15]}\n")
    settings = to_settings(resolve([str(path)], {"models.agent.name": "my-vllm"}), "r1")
    assert settings.prices == {"my-vllm": [0.0, 0.0], "proxy/claude": [3.0, 15.0]}
    table = PriceTable.load(extra=settings.prices)
    assert table.free("my-vllm") and table.cost("proxy/claude", 1_000_000, 0) == pytest.approx(3.0)
    assert from_settings(settings)["prices"] == settings.prices
    for bad, says in [("[-1, 2]", "negative"), ("[1, 2, 3]", "usd_per_million_input_tokens"),
                      ("cheap", "list")]:
        with pytest.raises(RunFileError, match=says) as caught:
            resolve([str(path), f"prices.bad={bad}"])
        assert len(caught.value.problems) == 1


def test_every_flag_of_ratchet_run_has_a_run_file_key():
    """A flag with no key would be a setting a run file cannot hold (and the reverse)."""
    import typer.main

    from harness.cli import app
    from harness.loop.runfile import FLAGS

    run = typer.main.get_command(app).commands["run"]
    flags = {max(p.opts, key=len) for p in run.params if p.opts}
    # where, a deprecated no-op, and an action on the workspace before the run (not a setting)
    not_settings = {"--config", "--workspace", "--stage-size", "--commit-agent"}
    assert flags - not_settings == set(FLAGS.values())
