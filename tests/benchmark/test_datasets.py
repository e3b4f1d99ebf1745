"""Official SWE-bench datasets load as they are (no ratchet field), in every file form, and
rows are selected the way mini-swe-agent and the official harness name it. No Docker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import Selection, TaskFileError, load_suite
from benchmark._official import official_image, official_problem, official_spec, split_eval_script
from benchmark._task import TaskSpec
from tests.conftest import DATA

OFFICIAL = DATA / "swebench_official.jsonl"
OFFICIAL_FIELDS = {"repo", "instance_id", "base_commit", "patch", "test_patch",
                   "problem_statement", "hints_text", "created_at", "version", "FAIL_TO_PASS",
                   "PASS_TO_PASS", "environment_setup_commit"}
RATCHET = str(Path(sys.executable).with_name("ratchet"))


def _rows() -> list[dict]:
    return [json.loads(line) for line in OFFICIAL.read_text().splitlines() if line.strip()]


def _row(**changes) -> dict:
    return {**_rows()[0], **changes}


def test_the_official_row_has_the_official_fields_only_and_loads():
    """The hand-written row holds exactly the official dataset's twelve fields (lists as
    JSON strings, as the Hugging Face files store them) and loads with no extra field."""
    assert set(_rows()[0]) == OFFICIAL_FIELDS
    loaded = load_suite(str(OFFICIAL))
    assert loaded.problems == []
    task = loaded.tasks[0]
    assert task.is_official and task.image is None and task.source is None
    assert task.FAIL_TO_PASS and task.PASS_TO_PASS


def test_json_jsonl_and_parquet_of_the_same_rows_load_alike(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    loaded = [load_suite(str(path)) for path in
              (OFFICIAL, tmp_path / "rows.json", tmp_path / "rows.parquet")]
    assert all(not one.problems for one in loaded)
    assert loaded[0].tasks == loaded[1].tasks == loaded[2].tasks


def test_a_dataset_directory_loads_by_split_with_swebenchs_loader(tmp_path: Path, monkeypatch):
    """``DIR/<split>.parquet`` is read by swebench's ``load_swebench_dataset``."""
    import datasets.config
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the datasets library caches what it reads: here, not in the user's ~/.cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    pq.write_table(pa.Table.from_pylist(_rows()), tmp_path / "test.parquet")
    loaded = load_suite(str(tmp_path), Selection(split="test"))
    assert [t.instance_id for t in loaded.tasks] == [_rows()[0]["instance_id"]]
    assert load_suite(str(tmp_path)).tasks == loaded.tasks  # test is the default split


def test_split_on_a_single_file_is_refused_with_the_fix():
    with pytest.raises(TaskFileError, match="is one split already.*--filter"):
        load_suite(str(OFFICIAL), Selection(split="dev"))


def test_filter_slice_and_instance_ids_pick_rows_like_mini_swe_agent():
    every = [t.instance_id for t in load_suite("quickstart").tasks]
    isodate = [i for i in every if i.startswith("isodate")]
    assert len(isodate) >= 2
    assert [t.instance_id for t in load_suite("quickstart", Selection(filter="isodate")).tasks] == isodate
    # re.match: anchored at the start, as mini-swe-agent's --filter
    assert load_suite("quickstart", Selection(filter="odate")).tasks == []
    sliced = load_suite("quickstart", Selection(filter="isodate", slice="1:")).tasks
    assert [t.instance_id for t in sliced] == isodate[1:]
    assert [t.instance_id for t in load_suite("quickstart", Selection(slice=":2")).tasks] == every[:2]
    picked = load_suite("quickstart", Selection(instance_ids=(every[3], every[1])))
    assert [t.instance_id for t in picked.tasks] == [every[1], every[3]]  # the suite's order


@pytest.mark.parametrize("selection, message", [
    (Selection(instance_ids=("no__such-1",)), "holds no instance no__such-1"),
    (Selection(filter="(["), "is not a regular expression"),
    (Selection(slice="first five"), "is not A:B"),
])
def test_a_bad_selection_is_one_clear_error(selection, message):
    with pytest.raises(TaskFileError, match=message):
        load_suite("quickstart", selection)


def test_official_image_names_follow_swebench(monkeypatch):
    task = load_suite(str(OFFICIAL)).tasks[0]
    monkeypatch.delenv("RATCHET_SWEBENCH_NAMESPACE", raising=False)
    monkeypatch.delenv("RATCHET_SWEBENCH_TAG", raising=False)
    assert official_image(task) == "swebench/sweb.eval.x86_64.gweis_1776_isodate-leap-century:latest"
    monkeypatch.setenv("RATCHET_SWEBENCH_NAMESPACE", "127.0.0.1:5000/swebench")
    monkeypatch.setenv("RATCHET_SWEBENCH_TAG", "v2")
    assert official_image(task) == "127.0.0.1:5000/swebench/sweb.eval.x86_64.gweis_1776_isodate-leap-century:v2"
    monkeypatch.setenv("RATCHET_SWEBENCH_NAMESPACE", "none")  # swebench's local build names
    assert official_image(task) == "sweb.eval.x86_64.gweis__isodate-leap-century:v2"


# An eval script in the shape swebench's published rows carry (4.x's generator, kept by 5.x).
EVAL_SCRIPT = """#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
cd /testbed
git status
git show
git -c core.fileMode=false diff abc123
source /opt/miniconda3/bin/activate
conda activate testbed
export LANG=en_US.UTF-8
git checkout abc123 tests/test_x.py
git apply -v - <<'EOF_114329324912'
diff --git a/tests/test_x.py b/tests/test_x.py
--- a/tests/test_x.py
+++ b/tests/test_x.py
@@ -1 +1 @@
-export EVIL=1
+source /dev/null
EOF_114329324912
: '>>>>> Start Test Output'
./tests/runtests.py --verbosity 2 test_x
: '>>>>> End Test Output'
git checkout abc123 tests/test_x.py
"""


def test_an_eval_script_splits_into_environment_lines_and_the_test_command():
    """Git lines (run by the wrapper itself, hooks off) and the heredoc's body (the test patch)
    are dropped; the environment lines and the command between the markers are kept."""
    setup, command = split_eval_script(EVAL_SCRIPT)
    assert setup == ["source /opt/miniconda3/bin/activate", "conda activate testbed", "cd /testbed",
                     "cd /testbed", "source /opt/miniconda3/bin/activate", "conda activate testbed",
                     "export LANG=en_US.UTF-8"]
    assert command == "./tests/runtests.py --verbosity 2 test_x"
    with pytest.raises(ValueError, match="markers"):
        split_eval_script("#!/bin/bash\npytest\n")


def test_a_row_carrying_its_own_eval_script_and_parser_is_graded_by_them():
    task = TaskSpec.model_validate(_row(repo="django/django", eval_script=EVAL_SCRIPT,
                                        log_parser="parse_log_django"))
    spec = official_spec(task)
    assert spec.log_parser == "parse_log_django"
    assert spec.test_command == "./tests/runtests.py --verbosity 2 test_x"
    assert spec.script.endswith("export LANG=en_US.UTF-8\n./tests/runtests.py --verbosity 2 test_x")


def test_a_classic_row_of_a_pytest_repo_gets_the_official_images_pytest_default():
    task = load_suite(str(OFFICIAL)).tasks[0]
    spec = official_spec(task)
    assert spec.log_parser == "parse_log_pytest"
    assert spec.setup == ("source /opt/miniconda3/bin/activate", "conda activate testbed")
    assert spec.test_command == "pytest -rA tests/test_duration.py"


def test_a_classic_row_of_a_non_pytest_repo_is_refused_at_load_with_the_fix(tmp_path: Path):
    """swebench 5.0.2 makes no eval scripts: a Django row without one cannot be graded
    honestly, so it is refused when the file loads, not after a paid agent run."""
    path = tmp_path / "django.jsonl"
    path.write_text(json.dumps(_row(repo="django/django", instance_id="django__django-1")) + "\n")
    loaded = load_suite(str(path))
    assert loaded.tasks == []
    assert "carries no 'eval_script'" in str(loaded.problems[0])
    assert "add both fields" in str(loaded.problems[0])
    assert official_problem(TaskSpec.model_validate(_row())) is None


def test_a_dataset_name_not_cached_and_offline_is_one_clear_error(tmp_path: Path):
    """Offline with an empty Hugging Face cache: exit 2, the dataset and both fixes named,
    nothing written in the working directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "COLUMNS": "200", "RATCHET_RUNS": str(tmp_path / "runs")}
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([RATCHET, "bench", "validate", "--suite", "SWE-bench/SWE-bench_Verified",
                           "--split", "test", "--slice", "0:3"],
                          capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "SWE-bench/SWE-bench_Verified" in message
    assert "not in the Hugging Face cache" in message and "--suite FILE.parquet" in message
    assert list(work.iterdir()) == []


def test_an_empty_selection_says_so(tmp_path: Path):
    proc = subprocess.run([RATCHET, "bench", "validate", "--suite", str(OFFICIAL),
                           "--filter", "nothing-matches"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 2
    assert "holds no usable task for the selection (filter 'nothing-matches')" in " ".join(proc.stderr.split())


def test_a_directory_without_the_split_is_named_with_the_fix(tmp_path: Path):
    with pytest.raises(TaskFileError, match="no dataset split 'dev' to read.*pass a task file"):
        load_suite(str(tmp_path), Selection(split="dev"))
