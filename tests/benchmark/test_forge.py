"""The task forge: mutation operators on small snippets, the flaky-test rule, statements
from pytest logs, and one end-to-end forge of a real package in Docker."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import load_tasks
from benchmark.forge import (
    apply_mutation,
    check_statement,
    failure_messages,
    find_mutations,
    is_library_file,
    split_of,
    stable_passes,
)
from benchmark.forge.mutations import TOKEN_KINDS
from benchmark.forge.forge import parse_pytest

SNIPPET = '''\
import os


def clamp(items, n, strict=True):
    """Docstring stays untouched."""
    if n < 0:
        return None
    total = 0
    for i in range(len(items)):
        total += items[i] * 2
    if not strict and n == 3:
        raise ValueError("bad")
    head = items[1:n]
    print(head, sep=",", end="")
    return os.path.join(str(n), "x") if total > 1 else total - 1


LIMIT = 3 + 4  # module level: never mutated
'''


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_every_kind_is_found_in_a_small_function():
    """Each of the six token kinds has at least one site in an ordinary function."""
    kinds = {m.kind for m in find_mutations("pkg/mod.py", SNIPPET, structural=False)}
    assert kinds == set(TOKEN_KINDS)


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_each_kind_makes_a_minimal_compiling_diff(kind):
    """A mutation compiles, changes the file, and touches one line (drop_stmt: the dropped
    statement's line, replaced by at most a `pass`); every other line keeps its bytes."""
    mutations = [m for m in find_mutations("pkg/mod.py", SNIPPET) if m.kind == kind]
    assert mutations
    for mutation in mutations:
        mutated = apply_mutation(SNIPPET, mutation)
        compile(mutated, "mod.py", "exec")
        assert mutated != SNIPPET
        changed = _changed_lines(SNIPPET, mutated)
        removed = [line for line in changed if line.startswith("-")]
        added = [line for line in changed if line.startswith("+")]
        assert len(removed) == 1, (mutation.describe(), changed)
        assert len(added) <= 1
        if kind == "drop_stmt":
            assert not added or added[0][1:].strip() == "pass"


def test_examples_of_each_operator():
    """The operators do what their names say, on the exact token."""
    found = {(m.kind, m.original.strip(), m.replacement.strip()) for m in
             find_mutations("pkg/mod.py", SNIPPET)}
    assert ("flip_compare", "<", "<=") in found
    assert ("flip_compare", "==", "!=") in found
    assert ("off_by_one", "len(items)", "len(items) - 1") in found  # range() stop
    assert ("off_by_one", "1", "0") in found  # slice bound
    assert ("invert_if", "n < 0", "not (n < 0)") in found
    assert ("change_op", "and", "or") in found
    assert ("change_op", "*", "//") in found
    assert ("swap_args", 'str(n), "x"', '"x", str(n)') in found
    assert any(kind == "drop_stmt" and "raise" in old for kind, old, _ in found)


def test_module_level_and_docstrings_are_never_mutated():
    """Only code inside functions changes: module-level code runs at import time."""
    for mutation in find_mutations("pkg/mod.py", SNIPPET):
        assert mutation.line < SNIPPET.splitlines().index("LIMIT = 3 + 4  # module level: never mutated") + 1
        assert "Docstring" not in mutation.original


def test_formatting_elsewhere_is_kept():
    """Odd spacing and comments outside the mutated token survive byte for byte."""
    source = "def f(a,   b):\n    x = a<b    # keep me\n    return   x\n"
    mutation = next(m for m in find_mutations("m.py", source) if m.kind == "flip_compare")
    assert apply_mutation(source, mutation) == "def f(a,   b):\n    x = a<=b    # keep me\n    return   x\n"


def test_no_mutation_in_test_files():
    """Tests and tooling are not library code; the package's modules are."""
    for path in ("tests/test_x.py", "test/helpers.py", "pytz/tests/test_tz.py", "conftest.py",
                 "src/pkg/conftest.py", "setup.py", "docs/conf.py", "pkg/test_utils.py",
                 "pkg/utils_test.py", "README.rst"):
        assert not is_library_file(path), path
    for path in ("src/pkg/__init__.py", "pkg/core.py", "parse.py", "xmltodict.py"):
        assert is_library_file(path), path


def test_a_test_that_passes_then_fails_is_never_stable():
    """The flaky-test rule: only tests that pass in every baseline run count."""
    first = {"t::a": "PASSED", "t::flaky": "PASSED", "t::b": "PASSED", "t::gone": "PASSED"}
    second = {"t::a": "PASSED", "t::flaky": "FAILED", "t::b": "PASSED"}
    assert stable_passes([first, second]) == {"t::a", "t::b"}
    assert stable_passes([]) == set()


PYTEST_LOG = """\
============================= test session starts ==============================
collected 3 items

tests/test_m.py .F.                                                      [100%]

=================================== FAILURES ===================================
______________________________ TestM.test_ordinal ______________________________
tests/test_m.py:9: in test_ordinal
    assert ordinal(1) == "st"
E   AssertionError: assert 'th' == 'st'
E     - st
E     + th
=========================== short test summary info ============================
PASSED tests/test_m.py::TestM::test_a
PASSED tests/test_m.py::TestM::test_b[a b]
FAILED tests/test_m.py::TestM::test_ordinal - AssertionError: assert 'th' == 'st'
========================= 1 failed, 2 passed in 0.05s ==========================
"""


def test_statuses_use_the_parser_names_and_failure_messages_are_read():
    """Names are cut at the first space as swebench's parser cuts them; the E lines of a
    failure are read per test (statements use only their exception type)."""
    statuses, dupes = parse_pytest(PYTEST_LOG)
    assert statuses == {"tests/test_m.py::TestM::test_a": "PASSED",
                        "tests/test_m.py::TestM::test_b[a": "PASSED",
                        "tests/test_m.py::TestM::test_ordinal": "FAILED"}
    assert dupes == []
    assert failure_messages(PYTEST_LOG)["TestM.test_ordinal"][0] == "AssertionError: assert 'th' == 'st'"


def test_split_is_deterministic_and_mostly_train():
    ids = [f"pkg__pkg-1.0__ast-x-{i:04d}" for i in range(1000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    assert 150 < splits.count("heldout") < 250


@pytest.mark.docker
def test_forge_end_to_end_yields_validated_tasks(tmp_path):
    """`ratchet forge --count 2` on a small real package writes tasks that validated: the
    gold patch resolves them, the empty patch does not, the hidden tests are not in the base."""
    out = tmp_path / "forged.jsonl"
    env = {**os.environ, "RATCHET_RUNS": str(tmp_path / "runs")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ratchet"), "forge", "--package", "inflection==0.5.1",
         "--count", "2", "--max-screened", "16", "--statements", "plain", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = load_tasks(out)
    assert not loaded.problems
    assert len(loaded.tasks) == 2
    for task in loaded.tasks:
        extra = task.model_extra
        assert extra["split"] in ("train", "heldout")
        assert task.FAIL_TO_PASS and task.PASS_TO_PASS  # the keep rule
        assert check_statement(task.problem_statement, fail_to_pass=list(task.FAIL_TO_PASS),
                               gold_patch=task.patch, test_patch=task.test_patch) == []
        assert extra["forge"]["statement"] == "plain"
        assert extra["forge"]["difficulty"]["tests_broken"] == len(task.FAIL_TO_PASS)
        for path in task.test_files:
            assert "deleted file mode" in task.source.setup_patch
            assert f"--- a/{path}\n+++ /dev/null" in task.source.setup_patch
            assert f"--- /dev/null\n+++ b/{path}" in task.test_patch
        assert all(not p.startswith("test") for p in [extra["forge"]["file"]])
    assert "forge report" in result.stdout
    reports = list((tmp_path / "runs" / "bench").glob("forge-*/forge_report.json"))
    assert json.loads(reports[0].read_text())[0]["kept"] == 2


LIBRARY = '''\
import functools


@functools.lru_cache()
def clamp(value, low, high):
    """Keep value within [low, high]."""
    if value < low:
        return low
    if value > high:
        return high
    return value
'''

BUGGY_ANSWER = '''Here it is:
```python
def clamp(value, low, high):
    """Keep value within [low, high]."""
    if value <= low:
        return high
    if value > high:
        return high
    return value
```
'''


def test_lm_rewrite_replaces_only_the_function_lines():
    """A model's rewrite replaces the function's own lines; the decorator, imports and
    the rest of the file keep their bytes; an answer that is not that function is refused."""
    import ast

    from benchmark.forge.lm import function_sites, splice_rewrite

    node = function_sites("pkg/m.py", LIBRARY)[0]
    mutation = splice_rewrite("pkg/m.py", LIBRARY, node, BUGGY_ANSWER)
    assert mutation is not None and mutation.kind == "lm_rewrite"
    mutated = apply_mutation(LIBRARY, mutation)
    assert mutated.startswith("import functools\n\n\n@functools.lru_cache()\ndef clamp(")
    assert "if value <= low:\n        return high\n" in mutated
    ast.parse(mutated)
    assert splice_rewrite("pkg/m.py", LIBRARY, node, "```python\ndef other(x):\n    return x\n```") is None
    assert splice_rewrite("pkg/m.py", LIBRARY, node, "no code at all (") is None
    same = "```python\n" + LIBRARY.split("@functools.lru_cache()\n")[1] + "```"
    assert splice_rewrite("pkg/m.py", LIBRARY, node, same) is None


def test_lm_mutations_through_an_openai_protocol_server(monkeypatch):
    """The LM strategy reaches a model over the OpenAI protocol (ratchet's scripted server
    here) and turns its answers into mutations."""
    from benchmark.forge.lm import lm_mutations, openai_complete
    from harness.models.scripted_model import ScriptedModelServer

    server = ScriptedModelServer({"default": BUGGY_ANSWER}).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "scripted")
        mutations, calls = lm_mutations("pkg", {"pkg/m.py": LIBRARY}, openai_complete("scripted"),
                                        limit=3)
    finally:
        server.stop()
    assert calls == 1 and len(mutations) == 1
    assert mutations[0].function == "clamp"


def _flip_first_comparison(messages: list[dict]) -> str:
    """A stand-in model for the LM strategy: returns the function with one comparison
    flipped (deterministic, offline)."""
    code = messages[-1]["content"].split("```python\n", 1)[1].split("\n```", 1)[0]
    flips = [m for m in find_mutations("f.py", code) if m.kind == "flip_compare"]
    return f"```python\n{apply_mutation(code, flips[0]) if flips else code}\n```"


@pytest.mark.docker
def test_lm_strategy_end_to_end_with_a_stand_in_model(tmp_path):
    """Rewrites from a model go through the same screening and validation as AST
    mutations and come out as valid `lm` tasks."""
    from benchmark import Grader, ImageBuilder
    from benchmark.forge import RECIPES, Forge, PackageRecipe

    grader = Grader(ImageBuilder(), tmp_path)
    issue = "inflection: a word comes out wrong\n\n```python\nimport inflection\n```\n"
    prompts: list[list[dict]] = []
    forge = Forge(RECIPES.get("inflection==0.5.1", PackageRecipe("inflection==0.5.1")), grader,
                  complete=_flip_first_comparison,
                  statement_model=lambda messages: prompts.append(messages) or issue)
    tasks, reports = forge.run(1, "lm", max_screened=12)
    assert reports[0].strategy == "lm" and reports[0].kept == len(tasks) == 1
    assert tasks[0].instance_id.startswith("inflection__inflection-0.5.1__lm-rewrite-")
    assert tasks[0].model_extra["forge"]["strategy"] == "lm"
    # the statement model saw the fix and the failing output, and its issue was used
    assert tasks[0].model_extra["forge"]["statement"] == "model"
    assert tasks[0].problem_statement == issue
    assert any(tasks[0].patch.strip() in m[-1]["content"] for m in prompts)
