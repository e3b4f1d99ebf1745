"""Every bad input is one clear error (issue 16, part 5), tried through the real CLI as a
demanding user would: each case runs ``ratchet ...`` in a subprocess and must exit non-zero
with a message naming the thing (file, field, option, run, URL) and no traceback, and must
write nothing outside the run's folder (a file under the case's directory that is new or
changed, outside ``runs/``, fails it). A few cases check the correct behaviour instead of an
error (``ok=True``): a real run's log not titled "(scripted)", a scripted run's log titled so.

The cases never need Docker: each bad input is refused before any sandbox starts. Model
endpoints are real sockets: a closed loopback port for "unreachable".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from benchmark import load_suite
from harness.loop.journal import Journal
from harness.loop.lineage import Lineage
from harness.loop.settings import LoopSettings

RATCHET = str(Path(sys.executable).with_name("ratchet"))
TASK = "isodate__isodate-0.7.2__leap-century-month-add"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DEAD_URL = f"http://127.0.0.1:{_closed_port()}/v1"


def _fabricate_run(ws: Path, run: str, scripted: str | None) -> None:
    """A finished run of generation 0 only, as the loop leaves it: refs, journal, settings."""
    sha = Lineage(ws, run).start().sha
    run_dir = ws / "runs" / run
    (run_dir / "gens" / "0000").mkdir(parents=True)
    settings = LoopSettings(run=run, suite="quickstart", generations=1,
                            agent_model="scripted" if scripted else "gpt-4o-mini",
                            meta_model="scripted" if scripted else "gpt-4o-mini", scripted=scripted)
    settings.save(run_dir / "settings.json")
    score = {"resolved": 1, "tasks": 1, "planned": 1, "runs": 1, "cost_usd": 0.0}
    with Journal(run_dir / "journal.jsonl") as journal:
        journal.append("run_started", run=run, resumed=False, settings={})
        journal.append("generation_started", generation=0, parent=None)
        journal.append("proposal", generation=0, valid=True, reason="the seed agent")
        journal.append("decided", generation=0, verdict="accepted", reason="generation 0", score=score)
        journal.append("generation_recorded", generation=0, sha=sha)
        journal.append("run_finished", reason="1 generations")
    (run_dir / "gens" / "0000" / "metrics.json").write_text(json.dumps(
        {"run": run, "generation": 0, "sha": sha, "verdict": "accepted", "score": score}))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace with a real run r1 and a scripted run d1, and a one-task suite."""
    root = tmp_path_factory.mktemp("bad-inputs-base")
    out = subprocess.run([RATCHET, "init", str(root / "ws")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    _fabricate_run(root / "ws", "r1", None)
    _fabricate_run(root / "ws", "d1", "demo")
    task = next(t for t in load_suite("quickstart").tasks if t.instance_id == TASK)
    (root / "suite.jsonl").write_text(task.model_dump_json(exclude_none=True) + "\n")
    return root


# -- set-ups: each makes the bad thing in the case's directory ------------------------------

def _task_row(root: Path) -> dict:
    return json.loads((root / "suite.jsonl").read_text())


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _unknown_parser(root: Path) -> None:
    row = _task_row(root)
    row["environment"]["log_parser"] = "nosuchparser"
    (root / "parser.jsonl").write_text(json.dumps(row) + "\n")


def _predictions(rows: list) -> Callable[[Path], None]:
    return _write("preds.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def _uncommitted_agent(root: Path) -> None:
    """A repository whose agent_seed/ was never committed (one commit of something else)."""
    repo = root / "bare-ws"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README.md").write_text("a project\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-qm", "readme")
    shutil.copytree(root / "ws" / "agent_seed", repo / "agent_seed")


def _unborn_agent(root: Path) -> None:
    """A repository with no commit at all and an agent_seed/ in it."""
    repo = root / "bare-ws"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copytree(root / "ws" / "agent_seed", repo / "agent_seed")


def _dirty_agent(root: Path) -> None:
    with (root / "ws" / "agent_seed" / "lessons.md").open("a") as handle:
        handle.write("\n- user-edit-7f3c: an edit the user forgot to commit\n")


def _untracked_in_agent(root: Path) -> None:
    (root / "ws" / "agent_seed" / "helper.py").write_text("X = 1\n")


def _corrupt_settings(root: Path) -> None:
    (root / "ws" / "runs" / "r1" / "settings.json").write_text("{not json")


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for step in setups:
            step(root)
    return setup


@dataclass
class Case:
    id: str
    args: list[str]
    says: list[str]
    """Words the message must hold (case-insensitive), e.g. the file, option, run or URL."""
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "ws"
    ok: bool = False
    """The correct behaviour is success (exit 0), not an error."""
    refuses: list[str] = field(default_factory=list)
    """Words the output must not hold."""
    after: Callable[[Path], None] | None = None
    """More checks on the case's directory afterwards."""
    writes: list[str] = field(default_factory=list)
    """Paths (relative to the case's directory) the command may write: where the user asked."""
    marks: tuple = ()


def _agent_still_dirty(root: Path) -> None:
    assert _git(root / "ws", "status", "--porcelain", "--", "agent_seed"), \
        "the refused run committed the agent: half-made"
    assert "user-edit-7f3c" not in _git(root / "ws", "log", "--all", "-p")


def _no_predictions(root: Path) -> None:
    assert not list(root.rglob("predictions.jsonl")), "predictions of a run that never ran"


DEAD = {"OPENAI_BASE_URL": DEAD_URL, "OPENAI_API_KEY": "sk-test"}
PRICED = {**DEAD, "RATCHET_PRICES": "{root}/prices.json"}
SUITE = ["--suite", "{root}/suite.jsonl"]
RUN = ["run", *SUITE, "--workspace", "{root}/ws"]

CASES = [
    # -- task files -------------------------------------------------------------------------
    Case("task-file-not-utf8-jsonl", ["bench", "validate", "--suite", "{root}/latin1.jsonl"],
         ["latin1.jsonl", "UTF-8"], _write("latin1.jsonl", b'{"instance_id": "caf\xe9"}\n')),
    Case("task-file-not-utf8-json", ["bench", "validate", "--suite", "{root}/latin1.json"],
         ["latin1.json", "UTF-8"], _write("latin1.json", b'[{"instance_id": "caf\xe9"}]')),
    Case("task-file-missing", ["bench", "validate", "--suite", "{root}/nope.jsonl"],
         ["nope.jsonl", "does not exist"]),
    Case("task-file-empty", ["bench", "validate", "--suite", "{root}/empty.jsonl"],
         ["empty.jsonl", "no usable task"], _write("empty.jsonl", "")),
    Case("task-file-not-a-list", ["bench", "validate", "--suite", "{root}/scalar.json"],
         ["scalar.json", "list"], _write("scalar.json", "42")),
    Case("task-file-a-directory", ["bench", "validate", "--suite", "{root}/ws"],
         ["ws", "read"]),
    Case("suite-unknown", ["bench", "validate", "--suite", "nosuchsuite"],
         ["nosuchsuite", "known:", "quickstart"]),
    Case("task-unknown-log-parser", ["bench", "validate", "--suite", "{root}/parser.jsonl"],
         ["parser.jsonl", "log_parser", "nosuchparser", "parse_log_pytest"], _unknown_parser),
    Case("loop-task-unknown-log-parser", ["run", "--suite", "{root}/parser.jsonl", "--workspace",
                                          "{root}/ws", "--run-id", "p1"],
         ["log_parser", "nosuchparser"], _unknown_parser, env=DEAD),
    # -- predictions ------------------------------------------------------------------------
    Case("predictions-not-utf8", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "UTF-8"], _write("preds.jsonl", b'{"instance_id": "caf\xe9"}\n')),
    Case("predictions-empty", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "no prediction"], _write("preds.jsonl", "\n")),
    Case("predictions-all-unknown", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "none", "suite.jsonl"],
         _predictions([{"instance_id": "other__task-1", "model_patch": ""}])),
    Case("predictions-missing", ["bench", "grade", *SUITE, "-p", "{root}/nope.jsonl"],
         ["nope.jsonl", "cannot be read"]),
    Case("predictions-not-json", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "JSON"], _write("preds.jsonl", "{oops\n")),
    Case("predictions-a-scalar", ["bench", "grade", *SUITE, "-p", "{root}/preds.json"],
         ["preds.json", "list"], _write("preds.json", "5")),
    Case("predictions-no-instance-id", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "instance_id"], _predictions([{"model_patch": ""}])),
    Case("predictions-patch-not-a-string", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", "model_patch"], _predictions([{"instance_id": TASK, "model_patch": 3}])),
    Case("predictions-duplicate-id", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl"],
         ["preds.jsonl", TASK, "twice"],
         _predictions([{"instance_id": TASK, "model_patch": ""}, {"instance_id": TASK, "model_patch": "x"}])),
    # -- run ids ----------------------------------------------------------------------------
    Case("run-id-traversal-bench-grade", ["bench", "grade", *SUITE, "-p", "{root}/preds.jsonl",
                                          "--run-id", "../../x"],
         ["run id", "../../x"], _predictions([{"instance_id": "other__task-1", "model_patch": ""}])),
    Case("run-id-traversal-bench-run", ["bench", "run", *SUITE, "--scripted", "oracle",
                                        "--agent", "{root}/nope", "--run-id", "../x"],
         ["run id", "../x"]),
    Case("run-id-absolute-bench-validate", ["bench", "validate", *SUITE, "--run-id", "{root}/abs"],
         ["run id"]),
    Case("run-id-traversal-loop", [*RUN, "--run-id", "../../x"], ["run id", "../../x"], env=DEAD),
    Case("run-id-with-space", [*RUN, "--run-id", "a b"], ["run id", "a b"], env=DEAD),
    Case("run-id-double-dot", [*RUN, "--run-id", "a..b"], ["run id", "a..b"], env=DEAD),
    Case("run-id-traversal-log", ["log", "../r1"], ["run id", "../r1"]),
    Case("run-id-traversal-status", ["status", "../../etc"], ["run id", "../../etc"]),
    Case("run-id-traversal-resume", ["resume", "../x"], ["run id", "../x"]),
    Case("run-id-traversal-report", ["report", "../x"], ["run id", "../x"]),
    Case("run-id-traversal-export", ["export", "../x", "--what", "predictions"], ["run id", "../x"]),
    Case("run-id-traversal-diff", ["diff", "../x", "0", "1"], ["run id", "../x"]),
    # -- diff -------------------------------------------------------------------------------
    Case("diff-run-missing", ["diff", "nope", "0", "1"], ["nope", "ratchet runs"]),
    Case("diff-generation-missing", ["diff", "r1", "0", "1"], ["r1", "generation 1", "0"]),
    Case("diff-html-generation-missing", ["diff", "r1", "0", "3", "--html"], ["r1", "generation 3"]),
    # -- the agent directory ----------------------------------------------------------------
    Case("agent-never-committed", ["run", *SUITE, "--workspace", "{root}/bare-ws", "--run-id", "a1"],
         ["agent_seed", "commit"], _uncommitted_agent, env=DEAD),
    Case("agent-in-repo-without-commits", ["run", *SUITE, "--workspace", "{root}/bare-ws",
                                           "--run-id", "a1"],
         ["agent_seed", "commit"], _unborn_agent, env=DEAD),
    Case("agent-uncommitted-edit", [*RUN, "--run-id", "a1"],
         ["agent_seed/lessons.md", "uncommitted", "--commit-agent"], _dirty_agent, env=DEAD,
         after=_agent_still_dirty),
    Case("agent-untracked-file", [*RUN, "--run-id", "a1"],
         ["agent_seed/helper.py", "--commit-agent"], _untracked_in_agent, env=DEAD),
    Case("commit-agent-but-endpoint-down-commits-nothing", [*RUN, "--run-id", "a1", "--commit-agent"],
         [DEAD_URL, "OPENAI_BASE_URL"], _dirty_agent, env=DEAD, after=_agent_still_dirty),
    Case("bench-agent-missing", ["bench", "run", *SUITE, "--scripted", "oracle", "--agent",
                                 "{root}/nope"], ["nope"], after=_no_predictions),
    # -- model endpoints --------------------------------------------------------------------
    Case("bench-run-endpoint-unreachable", ["bench", "run", *SUITE, "--model", "gpt-4o-mini", "--agent",
                                            "{root}/ws"],
         [DEAD_URL, "OPENAI_BASE_URL"], env=DEAD, after=_no_predictions),
    Case("loop-endpoint-unreachable", [*RUN, "--run-id", "e1"], [DEAD_URL, "OPENAI_BASE_URL"], env=DEAD),
    Case("loop-endpoint-not-a-url", [*RUN, "--run-id", "e1"], ["OPENAI_BASE_URL", "not-a-url"],
         env={"OPENAI_BASE_URL": "not-a-url", "OPENAI_API_KEY": "k"}),
    Case("loop-no-endpoint", [*RUN, "--run-id", "e1"], ["OPENAI_BASE_URL", "--scripted demo"]),
    Case("bench-run-no-endpoint", ["bench", "run", *SUITE, "--model", "gpt-4o-mini"], ["OPENAI_API_KEY"]),
    # -- runs -------------------------------------------------------------------------------
    Case("log-of-a-real-run-is-not-titled-scripted", ["log", "r1"], ["run r1"], ok=True,
         refuses=["(scripted)"]),
    Case("log-of-a-scripted-run-says-so", ["log", "d1"], ["run d1 (scripted)"], ok=True),
    Case("resume-settings-corrupt", ["resume", "r1"], ["settings.json", "r1"], _corrupt_settings),
    Case("resume-from-missing-generation", ["resume", "r1", "--from", "5"], ["generation 5"]),
    Case("report-output-dir-missing-is-made", ["report", "r1", "-o", "{root}/no/such/dir/r.html"],
         ["wrote"], ok=True, writes=["no/"]),
    Case("export-output-is-a-directory", ["export", "r1", "--what", "predictions", "-o", "{root}/ws"],
         ["cannot write", "ws"]),
    Case("export-unknown-kind", ["export", "r1", "--what", "bogus"], ["bogus", "predictions"]),
    Case("workspace-missing", ["log", "r1", "--workspace", "{root}/nowhere"], ["nowhere", "ratchet init"]),
    Case("init-on-a-file", ["init", "{root}/afile"], ["afile", "not a directory"], _write("afile", "x")),
    Case("scripted-script-missing", ["bench", "run", *SUITE, "--scripted", "{root}/nope.json"],
         ["nope.json"]),
    Case("loop-run-exists", [*RUN, "--run-id", "r1"], ["r1", "ratchet resume"], env=DEAD),
    # -- option values (owned by the `runfile` helper) --------------------------------------
    Case("holdout-negative", [*RUN, "--run-id", "h1", "--holdout", "-1"], ["holdout"], env=DEAD),
    Case("holdout-larger-than-suite", [*RUN, "--run-id", "h1", "--holdout", "5"], ["holdout"], env=DEAD),
    Case("budget-negative", [*RUN, "--run-id", "h1", "--budget-usd", "-5"], ["budget"], env=DEAD),
    # -- run files and price files (found while closing issues 16 and 17) -------------------
    Case("run-file-not-utf8", ["run", "-c", "{root}/run.yaml", "--run-id", "f1"],
         ["run.yaml", "UTF-8"], _write("run.yaml", b"suite: quickstart\ngenerations: caf\xe9\n")),
    Case("run-file-a-directory", ["run", "-c", "{root}/ws", "--run-id", "f1"],
         ["ws", "cannot read the run file"]),
    Case("prices-file-not-json", [*RUN, "--run-id", "f1"], ["RATCHET_PRICES", "prices.json", "JSON"],
         _write("prices.json", "{oops"), env=PRICED),
    Case("prices-file-not-utf8", [*RUN, "--run-id", "f1"], ["prices.json", "UTF-8"],
         _write("prices.json", b'{"caf\xe9": [1, 2]}'), env=PRICED),
    Case("prices-file-missing", [*RUN, "--run-id", "f1"], ["prices.json", "cannot be read"], env=PRICED),
    Case("prices-file-a-list", ["bench", "run", *SUITE, "--model", "gpt-4o-mini", "--agent", "{root}/ws"],
         ["prices.json", "mapping"], _write("prices.json", "[[1, 2]]"), env=PRICED,
         after=_no_predictions),
    Case("prices-entry-not-a-pair", [*RUN, "--run-id", "f1"],
         ["gpt-4o-mini", "[usd_per_million_input_tokens, usd_per_million_output_tokens]"],
         _write("prices.json", '{"gpt-4o-mini": [1, "x"]}'), env=PRICED),
    Case("model-unpriced-names-every-fix", [*RUN, "--run-id", "f1", "--model", "my-vllm"],
         ["'my-vllm' (agent)", "RATCHET_PRICES", "prices:", "--allow-unpriced"], env=DEAD),
    Case("run-file-prices-price-the-model", [*RUN, "--run-id", "f1", "-c", "{root}/run.yaml"],
         [DEAD_URL], _write("run.yaml", "models: {agent: {name: my-vllm}}\nprices: {my-vllm: [0, 0]}\n"),
         env=DEAD, refuses=["no price known"]),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Files under ``root`` (and directories outside runs/), but git's index, which a status
    query may refresh."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.endswith(".git/index") or "__pycache__" in rel:
            continue
        if path.is_file():
            stat = path.stat()
            found[rel] = (stat.st_size, stat.st_mtime_ns)
        elif path.is_dir() and "/runs" not in f"/{rel}":
            found[rel + "/"] = (0, 0)
    return found


def _outside_runs(rel: str) -> bool:
    return not any(part == "runs" for part in Path(rel).parts)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, base: Path, tmp_path: Path) -> None:
    """The input is refused with one message naming the thing, a non-zero exit, no
    traceback, and nothing written outside a run's folder (or, for ``ok`` cases, the
    correct behaviour)."""
    root = tmp_path / "case"
    root.mkdir()
    shutil.copytree(base / "ws", root / "ws", symlinks=True)
    shutil.copy(base / "suite.jsonl", root / "suite.jsonl")
    if case.setup:
        case.setup(root)
    before = _snapshot(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"COLUMNS": "1000", "RATCHET_RUNS": str(root / "runs"),
                **{k: v.replace("{root}", str(root)) for k, v in case.env.items()}})
    args = [a.replace("{root}", str(root)) for a in case.args]
    out = subprocess.run([RATCHET, *args], capture_output=True, text=True, env=env,
                         cwd=root / case.cwd if (root / case.cwd).is_dir() else root, timeout=120)
    text = " ".join((out.stdout + out.stderr).split())
    shown = f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in text, shown
    if case.ok:
        assert out.returncode == 0, shown
    else:
        assert out.returncode != 0, shown
        assert len(re.findall(r"\berror:", text.lower())) <= 1, f"more than one error: {shown}"
    for word in case.says:
        assert word.replace("{root}", str(root)).lower() in text.lower(), f"no {word!r}: {shown}"
    for word in case.refuses:
        assert word.lower() not in text.lower(), f"{word!r} shown: {shown}"
    after = _snapshot(root)
    written = sorted(rel for rel in set(after) | set(before)
                     if after.get(rel) != before.get(rel) and _outside_runs(rel)
                     and not any(rel.startswith(allowed) for allowed in case.writes))
    assert not written, f"written outside runs/: {written}\n{shown}"
    if case.after:
        case.after(root)


def test_the_table_covers_every_bad_input_of_the_issue():
    """The issue's list, by case id: a case dropped from the table fails here."""
    ids = {c.id for c in CASES}
    assert len(CASES) >= 30
    assert {"task-file-not-utf8-jsonl", "predictions-not-utf8", "diff-generation-missing",
            "diff-run-missing", "run-id-traversal-loop", "agent-never-committed",
            "agent-uncommitted-edit", "predictions-empty", "predictions-all-unknown",
            "bench-run-endpoint-unreachable", "task-unknown-log-parser",
            "loop-endpoint-unreachable", "log-of-a-real-run-is-not-titled-scripted",
            "holdout-negative", "holdout-larger-than-suite", "budget-negative",
            "loop-task-unknown-log-parser", "run-file-not-utf8", "prices-file-a-list"} <= ids
