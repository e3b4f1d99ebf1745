"""Task files: SWE-bench files load as they are; a bad instance costs only itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark import PypiSource, TaskFileError, load_suite, load_tasks
from tests.conftest import DATA

HANDWRITTEN = DATA / "handwritten.jsonl"


def _good() -> dict:
    return json.loads(HANDWRITTEN.read_text().splitlines()[0])


def test_handwritten_swebench_jsonl_with_pypi_source_loads():
    """A hand-written SWE-bench JSONL row (list fields as JSON strings) with a PyPI sdist
    source loads into a full task."""
    loaded = load_tasks(HANDWRITTEN)
    assert loaded.problems == []
    (task,) = loaded.tasks
    assert isinstance(task.source, PypiSource) and task.source.requirement == "inflection==0.5.1"
    assert task.FAIL_TO_PASS == ("test_ordinal_regression.py::test_ordinal_thirteenth",
                                 "test_ordinal_regression.py::test_ordinal_hundred_thirteenth")
    assert task.test_files == ["test_ordinal_regression.py"]


def test_official_json_list_with_prebuilt_image_loads(tmp_path: Path):
    """An official SWE-bench row (no ratchet fields, extra keys) loads given an image."""
    row = {k: v for k, v in _good().items() if k not in ("source", "environment")}
    row.update(image="swebench/sweb.eval.x86_64.demo:latest", difficulty="<15 min fix")
    path = tmp_path / "official.json"
    path.write_text(json.dumps([row]))
    loaded = load_tasks(path)
    assert loaded.problems == [] and loaded.tasks[0].image.startswith("swebench/")
    assert loaded.tasks[0].model_extra == {"difficulty": "<15 min fix"}


def test_bad_instance_is_named_and_the_rest_still_loads(tmp_path: Path):
    """One message names the file, the instance and the field; good tasks are kept."""
    good = _good()
    bad_list = {**good, "instance_id": "bad-f2p", "FAIL_TO_PASS": "[not json"}
    bad_pin = {**good, "instance_id": "bad-pin",
               "source": {**good["source"], "requirement": "inflection>=0.5"}}
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join([json.dumps(good), json.dumps(bad_list), "{oops",
                               json.dumps(bad_pin)]) + "\n")
    loaded = load_tasks(path)
    assert [t.instance_id for t in loaded.tasks] == ["inflection__ordinal-13th"]
    messages = [str(p) for p in loaded.problems]
    assert len(messages) == 3
    assert f"{path}, instance bad-f2p, field 'FAIL_TO_PASS'" in messages[0]
    assert "not a JSON list" in messages[0]
    assert f"{path}, instance line 3" in messages[1] and "is not JSON" in messages[1]
    assert "instance bad-pin, field 'source.pypi.requirement'" in messages[2]
    assert "NAME==VERSION" in messages[2]


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("test_patch"), "test_patch"),
    (lambda r: r.update(test_patch="not a diff"), "test_patch"),
    (lambda r: r.update(FAIL_TO_PASS="[]"), "FAIL_TO_PASS"),
    (lambda r: r.pop("environment"), None),
])
def test_each_malformed_field_is_reported(tmp_path: Path, mutate, field):
    row = _good()
    mutate(row)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n")
    loaded = load_tasks(path)
    assert loaded.tasks == [] and len(loaded.problems) == 1
    problem = loaded.problems[0]
    assert problem.instance == "inflection__ordinal-13th"
    assert problem.field == field


def test_duplicate_ids_and_unreadable_files(tmp_path: Path):
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(_good()) + "\n" + json.dumps(_good()) + "\n")
    loaded = load_tasks(path)
    assert len(loaded.tasks) == 1 and "duplicate" in str(loaded.problems[0])
    with pytest.raises(TaskFileError, match="cannot be read"):
        load_tasks(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(TaskFileError, match=r"broken.json: is not JSON"):
        load_tasks(broken)


def test_unknown_suite_lists_the_known_ones():
    with pytest.raises(TaskFileError, match="known: .*quickstart"):
        load_suite("no-such-suite")


def test_a_pypi_task_with_an_upstream_base_commit_is_refused_with_the_fix(tmp_path: Path):
    """An sdist becomes a fresh one-commit repository: an upstream SHA cannot exist in it.
    Such a row was once graded with `fatal: reference is not a tree` hidden in the log while
    `bench validate` said valid; now it is refused at load, naming the field and the fix."""
    row = _good()
    row["base_commit"] = "8f2a9c1d0e4b7a6c5d3e2f1a0b9c8d7e6f5a4b3c"
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**_good(), "instance_id": "ok"}) + "\n")
    loaded = load_tasks(path)
    assert [t.instance_id for t in loaded.tasks] == ["ok"] and len(loaded.problems) == 1
    message = str(loaded.problems[0])
    assert "inflection__ordinal-13th" in message and "cannot exist" in message
    assert "Remove 'base_commit'" in message


def test_the_eval_script_restores_test_files_from_the_built_repos_own_base():
    """Images ratchet builds hold a fresh one-commit repo: restoring from an upstream SHA
    would fail; a prebuilt image (history kept) restores from the task's base_commit."""
    from benchmark._grading import eval_script_lines

    task = load_suite("quickstart").tasks[0]
    modified_test_patch = task.test_patch.replace("new file mode 100644\n", "", 1).replace(
        "--- /dev/null", f"--- a/{task.test_files[0]}", 1)
    built = task.model_copy(update={"base_commit": "8f2a9c1d", "test_patch": modified_test_patch})
    assert any(line.startswith("git checkout HEAD -- ") for line in eval_script_lines(built))
    prebuilt = built.model_copy(update={"image": "swebench/x:latest"})
    assert any(line.startswith("git checkout 8f2a9c1d -- ") for line in eval_script_lines(prebuilt))
