"""Structural and combined bug kinds, the keep rule (a task has FAIL_TO_PASS *and*
PASS_TO_PASS tests) and the difficulty estimate."""

from __future__ import annotations

import ast
import difflib

import pytest

from benchmark.forge import KINDS, apply_mutation, find_mutations
from benchmark.forge.difficulty import estimate_difficulty, with_resolve_rate
from benchmark.forge.forge import Forge
from benchmark.forge.mutations import STRUCTURE_KINDS, TOKEN_KINDS
from benchmark.forge.structural import COMBINED, combine, combined_mutations, find_structural

MODULE = '''\
import os


class Base:
    pass


class Box(Base, dict):
    """A box of numbers."""

    def __init__(self, items):
        self.items = list(items)
        self.size = 0

    def total(self, n):
        out = 0
        for item in self.items:
            if item < 0:
                continue
            out += item
        while n > 10:
            n = n - 3
        return out - n

    def ratio(self, a, b):
        return a / b


LIMIT = 3 + 4
'''


def _diff(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_kind_lists_agree():
    """One list of kinds: token kinds, structural kinds, and combined bugs."""
    assert KINDS == TOKEN_KINDS + STRUCTURE_KINDS + (COMBINED,)
    assert len(set(KINDS)) == len(KINDS) == 15


def test_every_structural_kind_is_found_and_compiles():
    found = find_structural("pkg/box.py", MODULE)
    assert {m.kind for m in found} == set(STRUCTURE_KINDS)
    for mutation in found:
        mutated = apply_mutation(MODULE, mutation)
        compile(mutated, "box.py", "exec")
        assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(MODULE)), mutation.describe()
        assert "LIMIT = 3 + 4" in mutated  # module-level code is never edited


def _one(kind: str, original_contains: str):
    return next(m for m in find_structural("pkg/box.py", MODULE)
                if m.kind == kind and original_contains in m.original)


@pytest.mark.parametrize("kind, where, removed, added", [
    ("remove_cond", "if item < 0", ["if item < 0:", "continue"], []),
    ("remove_loop", "while n > 10", ["while n > 10:", "n = n - 3"], []),
    ("remove_assign", "self.size = 0", ["self.size = 0"], []),
    ("swap_operands", "a / b", ["return a / b"], ["return b / a"]),
    ("swap_operands", "item < 0", ["if item < 0:"], ["if 0 < item:"]),
    ("change_const", "10", ["while n > 10:"], ["while n > 9:"]),  # ±1, fixed by the site
    ("remove_method", "def ratio", ["def ratio(self, a, b):", "return a / b"], []),
    ("remove_base", "Base", ["class Box(Base, dict):"], ["class Box(dict):"]),
])
def test_structural_edits_touch_only_their_lines(kind, where, removed, added):
    """Each edit removes or rewrites exactly the lines it names; all others keep their bytes."""
    changed = _diff(MODULE, apply_mutation(MODULE, _one(kind, where)))
    assert [line[1:].strip() for line in changed if line.startswith("-") and line[1:].strip()] == removed
    assert [line[1:].strip() for line in changed if line.startswith("+") and line[1:].strip()] == added


def test_shuffle_swaps_two_adjacent_statements():
    mutation = _one("shuffle_stmts", "self.items = list(items)")
    mutated = apply_mutation(MODULE, mutation)
    assert "        self.size = 0\n        self.items = list(items)\n" in mutated
    assert sorted(mutated.splitlines()) == sorted(MODULE.splitlines())


def test_a_block_emptied_by_a_removal_gets_pass():
    source = "def f(x):\n    if x:\n        y = 1\n    return x\n"
    mutation = next(m for m in find_structural("m.py", source) if m.kind == "remove_assign")
    assert apply_mutation(source, mutation) == "def f(x):\n    if x:\n        pass\n    return x\n"


def test_single_base_removal_drops_the_parentheses():
    source = "class A(B):\n    def f(self):\n        return 1\n"
    mutation = next(m for m in find_structural("m.py", source) if m.kind == "remove_base")
    assert apply_mutation(source, mutation).startswith("class A:\n")


def test_combined_bugs_have_two_or_three_sites_in_distinct_functions():
    singles = find_mutations("pkg/box.py", MODULE)
    combined = list(combined_mutations("pkg/box.py", MODULE, singles, seed="s", limit=4))
    assert combined
    for mutation in combined:
        assert mutation.kind == COMBINED and 2 <= len(mutation.parts) <= 3
        assert len(set(mutation.function.split(","))) == len(mutation.parts)
        compile(apply_mutation(MODULE, mutation), "box.py", "exec")
    assert combined == list(combined_mutations("pkg/box.py", MODULE, singles, seed="s", limit=4))


def test_overlapping_parts_are_not_combined():
    first = _one("remove_method", "def ratio")
    second = _one("swap_operands", "a / b")
    assert combine("pkg/box.py", MODULE, [first, second]) is None


PYTEST_ONE_FILE = """\
=========================== short test summary info ============================
PASSED tests/test_a.py::test_keep
FAILED tests/test_b.py::test_only - AssertionError
========================= 1 failed, 1 passed in 0.05s ==========================
"""


def test_a_candidate_without_pass_to_pass_is_not_kept():
    """The keep rule: with no PASS_TO_PASS a "fix" that breaks every other hidden test would
    still be graded resolved, so such a candidate is dropped; one whose failing test has a
    passing sibling in its file is kept."""
    mutation = _one("remove_assign", "self.size = 0")
    stable = {"tests/test_a.py::test_keep", "tests/test_b.py::test_only"}
    assert Forge._judge(mutation, stable, PYTEST_ONE_FILE) is None
    with_sibling = PYTEST_ONE_FILE.replace(
        "PASSED tests/test_a.py::test_keep", "PASSED tests/test_b.py::test_sibling")
    candidate = Forge._judge(mutation, stable | {"tests/test_b.py::test_sibling"}, with_sibling)
    assert candidate is not None
    assert candidate.fail_to_pass == ["tests/test_b.py::test_only"]
    assert candidate.pass_to_pass == ["tests/test_b.py::test_sibling"]


GOLD_ONE_LINE = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = a < b\n+x = a <= b\n"


def test_difficulty_grows_with_the_fix_and_shrinks_with_the_symptom():
    easy = estimate_difficulty(GOLD_ONE_LINE, [f"t::{i}" for i in range(12)], "flip_compare")
    assert easy == {"lines_changed": 2, "files_changed": 1, "tests_broken": 12, "level": "easy",
                    "rated_by": "patch"}
    big = GOLD_ONE_LINE + "".join(f"+line {i}\n" for i in range(10))
    assert estimate_difficulty(big, ["t::a"], "combined")["level"] == "hard"
    rated = with_resolve_rate(easy, resolved=0, attempts=3)
    assert rated["level"] == "hard" and rated["seed_resolve_rate"] == 0.0
    assert with_resolve_rate(easy, 0, 0) == easy


def test_the_compile_check_reads_only_the_statement_holding_the_edit_and_still_refuses_bad_code():
    """A big module has hundreds of sites: each is compiled within its own module-level
    statement, which still refuses an edit that breaks the syntax (or a name rule) there."""
    from benchmark.forge.mutations import CompileCheck, Mutation

    compiles = CompileCheck("pkg/box.py", MODULE, ast.parse(MODULE))
    good = _one("swap_operands", "a / b")
    assert compiles(good)
    start = MODULE.index("return out - n")
    broken = Mutation("pkg/box.py", "x", 1, 0, "total", start, start + len("return out - n"),
                      "return out - n", "return out -")
    assert not compiles(broken)
    assert all(compiles(m) for m in find_mutations("pkg/box.py", MODULE))
