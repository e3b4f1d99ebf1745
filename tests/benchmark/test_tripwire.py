"""Trip-wires are copies of the task's own tests that fail whatever the code under test does."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
import textwrap

from benchmark._tripwire import _FALLBACK_WORDS, Planted, plant, statuses_of

SOURCE = textwrap.dedent('''\
    import pytest

    from mylib import add


    @pytest.mark.parametrize("a, b", [(1, 2), (3, 4)])
    def test_add_numbers(a, b):
        assert add(a, b) == a + b


    def test_add_returns_early():
        if add(1, 1) == 2:
            return
        assert False


    class TestAdd:
        def test_add_in_class(self):
            assert add(2, 2) == 4

        @pytest.mark.skip
        def test_skipped(self):
            pass


    def test_one_line(): assert add(0, 0) == 0
    ''')


def _run(tmp_path, source: str) -> str:
    (tmp_path / "mylib.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "test_x.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           "test_x.py"], cwd=tmp_path, capture_output=True, text=True).stdout


def test_planted_copies_fail_even_where_the_original_passes_or_returns_early(tmp_path):
    """The original tests pass; every trip-wire fails (a parametrized copy in each of its
    cases, a copy of a test that returns early, a copy inside its class)."""
    rng = random.Random(7)
    new, planted = plant("test_x.py", SOURCE,
                         ["test_add_numbers[1-2]", "test_add_returns_early", "TestAdd::test_add_in_class"],
                         rng, count=3)
    assert len(planted) == 3
    assert any(p.test.startswith("TestAdd::") for p in planted)
    out = _run(tmp_path, new)
    from swebench.harness.log_parsers import parse_log_pytest

    status = parse_log_pytest(out, None)
    for name in ("test_add_numbers[1-2]", "test_add_numbers[3-4]", "test_add_returns_early",
                 "TestAdd::test_add_in_class"):
        assert status[f"test_x.py::{name}"] == "PASSED", out
    for p in planted:
        found = statuses_of(p, status)
        assert found and set(found) == {"FAILED"}, (p, out)  # a parametrized copy: every case


def test_names_are_fresh_per_grading_and_drawn_from_the_file():
    names = set()
    for seed in range(5):
        _, planted = plant("test_x.py", SOURCE, ["test_add_numbers"], random.Random(seed))
        names.add(planted[0].test)
        assert planted[0].test.startswith("test_")
    assert len(names) == 5


def test_no_trip_wire_where_no_test_lends_itself():
    """A one-line def or an async test is not copied; a file that does not parse is kept."""
    assert plant("test_x.py", SOURCE, ["test_one_line"], random.Random(1)) == (SOURCE, [])
    assert plant("test_x.py", "def broken(:\n", ["x"], random.Random(1)) == ("def broken(:\n", [])


def test_a_trip_wire_counts_its_parametrized_cases():
    planted = Planted("t.py", "TestA::test_q")
    status = {"t.py::TestA::test_q[1]": "FAILED", "t.py::TestA::test_q[2]": "PASSED",
              "t.py::TestA::test_qq": "PASSED"}
    assert sorted(statuses_of(planted, status)) == ["FAILED", "PASSED"]


ENDS_WITH_CLASS = textwrap.dedent('''\
    from mylib import add


    def test_add_small():
        assert add(1, 2) == 3


    class TestAdd:
        def test_add_in_class(self):
            assert add(2, 2) == 4
    ''')


def test_a_class_that_ends_the_file_keeps_its_trip_wire_inside_it(tmp_path):
    """Both copies go in at the file's last line: the class's method must land inside the
    class, not after a module-level copy (where it would be a dead nested function, missing
    from the run, and an honest run would read as tampered)."""
    for seed in range(6):
        new, planted = plant("test_x.py", ENDS_WITH_CLASS,
                             ["test_add_small", "TestAdd::test_add_in_class"],
                             random.Random(seed), count=2)
        assert len(planted) == 2
        out = _run(tmp_path, new)
        from swebench.harness.log_parsers import parse_log_pytest

        status = parse_log_pytest(out, None)
        for p in planted:
            assert statuses_of(p, status) == ["FAILED"], (seed, p, new, out)


TWINNABLE = textwrap.dedent('''\
    import pytest

    from mylib import add


    def test_add_small():
        total = add(1, 2)
        assert total == 3


    @pytest.mark.parametrize("a", [1, 2])
    def test_add_names(a):
        assert add("x", "y") == "xy"


    class TestAdd:
        def test_add_lists(self):
            assert add([1], [2]) == [1, 2]


    def test_returns_before_asserting():
        if add(1, 1) == 2:
            return
        assert add(1, 1) == 2
    ''')
F2P = ["test_add_small", "test_add_names[1]", "TestAdd::test_add_lists",
       "test_returns_before_asserting"]


def _function_source(source: str, name: str) -> str:
    import ast

    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = source.splitlines(keepends=True)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return "".join(lines[first - 1: node.end_lineno])


ORIGINALS = ("test_add_small", "test_add_names", "test_add_lists", "test_returns_before_asserting")


def _original_of(new: str, twin: str) -> str:
    """The test of TWINNABLE that `twin` (in `new`) is a twin of: the same lines but its
    def line and one other."""
    lines = _function_source(new, twin).splitlines()
    matches = [name for name in ORIGINALS if _differing_lines(
        _function_source(TWINNABLE, name).replace(f"def {name}(", f"def {twin}(").splitlines(),
        lines) == 1]
    assert len(matches) == 1, (twin, lines)
    return matches[0]


def test_a_twin_is_its_original_but_for_its_name_and_one_literal():
    """A twin carries the original's decorators and body; the only differences are its
    name and one changed literal, so code under test cannot tell it by its shape."""
    copied = set()
    for seed in range(30):
        new, planted = plant("test_x.py", TWINNABLE, F2P, random.Random(seed), count=3,
                             twin_of=F2P)
        assert {p.kind for p in planted} == {"twin"}
        copied |= {_original_of(new, p.test.rsplit("::", 1)[-1]) for p in planted}
    assert copied == {"test_add_small", "test_add_names", "test_add_lists"}  # never the early return


def _differing_lines(a: list[str], b: list[str]) -> int:
    return sum(x != y for x, y in zip(a, b)) if len(a) == len(b) else -1


def test_twins_fail_on_fixed_and_unfixed_code_and_sit_above_or_below(tmp_path):
    """Against the right code every original passes and every twin fails; against a wrong
    `add` the originals fail and so do the twins (a literal moved by two or more is not an
    off-by-one's value). Over seeds, a twin lands both above and below its original."""
    places = set()
    for seed in range(6):
        new, planted = plant("test_x.py", TWINNABLE, F2P, random.Random(seed), count=2,
                             twin_of=F2P)
        assert len(planted) == 2 and {p.kind for p in planted} == {"twin"}
        for right in (True, False):
            (tmp_path / "mylib.py").write_text(
                "def add(a, b):\n    return a + b\n" if right else
                "def add(a, b):\n    return a + b + (1 if isinstance(a, int) else a[:0])\n")
            (tmp_path / "test_x.py").write_text(new)
            out = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                                  "test_x.py"], cwd=tmp_path, capture_output=True, text=True).stdout
            from swebench.harness.log_parsers import parse_log_pytest

            status = parse_log_pytest(out, None)
            for p in planted:
                found = statuses_of(p, status)
                assert found and set(found) == {"FAILED"}, (seed, right, p, out)
            if right:
                assert status["test_x.py::test_add_small"] == "PASSED", out
        order = [line.split("def ")[1].split("(")[0] for line in new.splitlines()
                 if line.lstrip().startswith("def test_")]
        for p in planted:
            name = p.test.rsplit("::", 1)[-1]
            at = order.index(name)
            original = _original_of(new, name)
            places.add("above" if order[at + 1:at + 2] == [original] else "below")
            assert order[at - 1:at] == [original] or order[at + 1:at + 2] == [original]
    assert places == {"above", "below"}


def test_without_a_twinnable_test_the_copy_with_finally_is_the_fallback():
    new, planted = plant("test_x.py", TWINNABLE, F2P, random.Random(3), count=1,
                         twin_of=["test_returns_before_asserting"])
    assert [p.kind for p in planted] == ["copy"]
    assert "finally:" in new


MARKED = textwrap.dedent('''\
    import pytest

    from mylib import add

    CASES = [pytest.param(1, marks=pytest.mark.xfail), pytest.param(2, marks=pytest.mark.skip), 3]


    @pytest.mark.parametrize("a", [pytest.param(1, marks=pytest.mark.xfail), 2])
    def test_add_marked_case(a):
        assert add(a, 0) == 2


    @pytest.mark.parametrize("a", CASES)
    def test_add_listed_cases(a):
        assert add(a, 0) == 3


    @pytest.mark.skipif(False, reason="never")
    def test_add_skipif():
        assert add(1, 1) == 2
    ''')
MARKED_IDS = ["test_add_marked_case[2]", "test_add_listed_cases[3]", "test_add_skipif"]


def test_a_case_skipped_or_xfailed_by_its_own_marks_is_not_tampering(tmp_path):
    """Trip-wires keep their original's parametrized cases, marks included (a module-level
    list of cases hides them from any reading of the decorator), and each case is judged
    beside the original's: an honest run is never read as tampered, while a trip-wire
    forced to pass, or taken out where its original passed, still is."""
    from swebench.harness.log_parsers import parse_log_pytest

    from benchmark._grading import _tripwire_reasons

    kinds = set()
    for seed in range(8):
        new, planted = plant("test_x.py", MARKED, MARKED_IDS, random.Random(seed), count=2,
                             twin_of=MARKED_IDS)
        assert planted
        kinds |= {p.kind for p in planted}
        status = parse_log_pytest(_run(tmp_path, new), None)
        assert _tripwire_reasons(planted, status) == [], (seed, planted, status)
        for p in planted:
            forced = {k: ("PASSED" if k.startswith(p.nodeid) else v) for k, v in status.items()}
            assert _tripwire_reasons([p], forced), (seed, p)
            hidden = {k: v for k, v in status.items() if not k.startswith(p.nodeid)}
            original_passed = any(k.startswith(f"{p.file}::{p.original}") and v == "PASSED"
                                  for k, v in status.items())
            assert bool(_tripwire_reasons([p], hidden)) == original_passed, (seed, p)
    assert kinds == {"twin", "copy"}


INHERITS = textwrap.dedent('''\
    import unittest

    from mylib import add
    from base_tests import Mixin


    class TestAdd(Mixin, unittest.TestCase):
        def test_add_small_lists(self):
            self.assertEqual(add([1], [2]), [1, 2])
    ''')


INHERITS_IDS = ["TestAdd::test_add_small_lists"] + [
    f"TestAdd::test_{a}_{b}_{c}" for word in _FALLBACK_WORDS
    for a, b, c in ((word, "small", "lists"), ("add", word, "lists"), ("add", "small", word))]
"""`INHERITS`'s FAIL_TO_PASS test, then inherited tests under every sibling name of it
(`INHERITS` has too few words of its own, so its siblings take the fallback words)."""


def _wrapper(tmp_path, targets: dict[str, list[str]], twins: dict[str, list[str]]):
    """The grading wrapper, to plant two trip-wires in the repo at `tmp_path`."""
    from benchmark._wrapper import Wrapper

    return Wrapper({"timeout_s": 60, "uid": 0, "gid": 0, "repo": str(tmp_path),
                    "tripwire_count": 2, "tripwire_targets": targets, "tripwire_twins": twins})


def test_a_trip_wire_never_takes_the_name_of_a_test_the_class_inherits():
    """`TestAdd::test_small` comes from a base class in another file: a trip-wire named so
    would override it, and an honest run would fail it. The task's test ids are reserved."""
    ids = INHERITS_IDS
    for seed in range(30):
        _, planted = plant("test_x.py", INHERITS, ids, random.Random(seed), count=2,
                           twin_of=ids[:1])
        assert planted
        for p in planted:
            assert p.test not in ids, (seed, p)


def test_the_wrapper_reserves_every_test_the_task_names_in_the_file(tmp_path, monkeypatch):
    """Found by the forged audit: a gold patch of cachetools read as unresolved, because the
    twin of the FAIL_TO_PASS ``test_ttu`` was named ``test_copy``, a PASS_TO_PASS test that
    ``TLRUCacheTest`` inherits from ``tests/__init__.py``; the twin overrode it and failed.
    The wrapper plants twins with no `wanted` list, so it must reserve the task's test ids
    of the file itself. Here every sibling name of the FAIL_TO_PASS test is an inherited
    PASS_TO_PASS test: with the reservation, none is taken; without it, one is."""
    from benchmark import _tripwire

    ids = INHERITS_IDS
    (tmp_path / "test_x.py").write_text(INHERITS)

    def taken_names() -> set[str]:
        wrapper = _wrapper(tmp_path, {"test_x.py": ids}, {"test_x.py": ids[:1]})
        wrapper.tripwires()
        found = wrapper.result["tripwires"]
        assert found and found[0]["kind"] == "twin", found
        return {t["test"] for t in found} & set(ids)

    for _ in range(10):
        assert taken_names() == set()

    real_plant = _tripwire.plant
    monkeypatch.setattr(_tripwire, "plant",  # the defence off: nothing reserved
                        lambda *args, reserved=(), **kwargs: real_plant(*args, **kwargs))
    assert taken_names()


_BOUND_NAMES = [f"test_{a}_{b}_{c}" for w in ("the", "module", "data", "intact")
                for a, b, c in ((w, "small", "lists"), ("add", w, "lists"), ("add", "small", w))]
BOUND = "from mylib import add\n\n" + "".join(f"{n} = 'data'\n" for n in _BOUND_NAMES) + \
    textwrap.dedent(f'''

    def test_add_small_lists():
        assert add([1], [2]) == [1, 2]


    def test_the_module_data_is_intact():
        assert {{{", ".join(_BOUND_NAMES)}}} == {{"data"}}
    ''')


def test_a_trip_wire_never_rebinds_a_name_the_file_uses(tmp_path, monkeypatch):
    """Every sibling name of the FAIL_TO_PASS test is a module variable that another test
    reads: a twin of that name would rebind it, and an honest run would fail that test.
    Names the file binds or reads are taken; with only its functions and classes taken
    (the defence off), the honest run fails."""
    from benchmark import _tripwire

    def honest_run(seed: int) -> dict[str, str]:
        new, planted = plant("test_x.py", BOUND, ["test_the_module_data_is_intact"],
                             random.Random(seed), count=1, twin_of=["test_add_small_lists"])
        assert [p.kind for p in planted] == ["twin"]
        return _status(tmp_path, new, right=True)

    for seed in range(3):
        assert honest_run(seed)["test_x.py::test_the_module_data_is_intact"] == "PASSED"
    monkeypatch.setattr(_tripwire, "_names_in", lambda tree: {  # the defence off
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)})
    assert honest_run(0)["test_x.py::test_the_module_data_is_intact"] == "FAILED"


SHAPES = textwrap.dedent('''\
    import unittest

    import pytest

    from mylib import add


    def test_add_bound_first():
        expected = [1, 2]
        result = add([1], [2])
        assert result == expected


    @pytest.mark.parametrize("a, b, expected", [(1, 2, 3), (2, 2, 4), pytest.param(5, 5, 10, id="tens")])
    def test_add_cases(a, b, expected):
        assert add(a, b) == expected


    class TestAdd(unittest.TestCase):
        def test_add_bound_unittest(self):
            expected = "xy"
            self.assertEqual(add("x", "y"), expected)
    ''')
SHAPE_IDS = ["test_add_bound_first", "test_add_cases[1-2-3]", "test_add_cases[2-2-4]",
             "test_add_cases[tens]", "TestAdd::test_add_bound_unittest"]

NOT_TWINS = textwrap.dedent('''\
    import pytest

    from mylib import add

    CASES = [(1, 2, 3), (2, 2, 4)]


    def test_add_read_between():
        expected = [1]
        expected.append(2)
        assert add([1], [2]) == expected


    def test_add_input_too():
        expected = 4
        assert add(expected, 0) == expected


    @pytest.mark.parametrize("a, b, expected", CASES)
    def test_add_listed(a, b, expected):
        assert add(a, b) == expected


    @pytest.mark.parametrize("a, b, expected", [(1, 2, 3)], indirect=["a"])
    def test_add_indirect(a, b, expected):
        assert add(a, b) == expected


    @pytest.mark.parametrize("word", ["ab", "cd"])
    def test_add_param_is_the_input(word):
        assert add(word[0], word[1]) == word


    @pytest.mark.parametrize("a, expected", [(1, 1), (2, 2)])
    def test_add_read_before(a, expected):
        total = add(a, expected - a)
        assert total == expected
    ''')


def test_an_expected_value_bound_to_a_name_or_a_parameter_gets_a_twin():
    """`expected = LIT ... assert f() == expected` changes the bound literal (kind `twin`);
    a parametrized `assert f(a, b) == expected` changes that parameter in every case (kind
    `cases`). Where the value is read before the assertion, is also the input, or lives in
    a list elsewhere or an indirect fixture, there is no twin (a copy instead)."""
    kinds: dict[str, set[str]] = {}
    for seed in range(40):
        _, planted = plant("test_x.py", SHAPES, SHAPE_IDS, random.Random(seed), count=1,
                           twin_of=SHAPE_IDS)
        for p in planted:
            kinds.setdefault(p.original.split("::")[-1], set()).add(p.kind)
    assert kinds == {"test_add_bound_first": {"twin"}, "test_add_cases": {"cases"},
                     "test_add_bound_unittest": {"twin"}}, kinds
    names = ["test_add_read_between", "test_add_input_too", "test_add_listed[1-2-3]",
             "test_add_indirect[1-2-3]", "test_add_param_is_the_input[ab]",
             "test_add_read_before[1-1]"]
    for seed in range(10):
        _, planted = plant("test_x.py", NOT_TWINS, names, random.Random(seed), count=5,
                           twin_of=names, negations=(False,))  # no value to change
        assert {p.kind for p in planted} <= {"copy"}, (seed, planted)


def _status(tmp_path, source: str, right: bool) -> dict[str, str]:
    from swebench.harness.log_parsers import parse_log_pytest

    (tmp_path / "mylib.py").write_text("def add(a, b):\n    return a + b\n" if right else
                                       "def add(a, b):\n    return b\n")
    (tmp_path / "test_x.py").write_text(source)
    out = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                          "test_x.py"], cwd=tmp_path, capture_output=True, text=True).stdout
    return parse_log_pytest(out, None)


def test_twins_of_bound_and_parametrized_values_fail_on_right_and_wrong_code(tmp_path):
    """Right code: the originals pass, every case of every twin fails, and nothing reads as
    tampering; wrong code: the originals fail too, still no tampering. Forced to pass (or
    taken out while the original passed), each twin trips."""
    from benchmark._grading import _tripwire_reasons

    seen = set()
    for seed in range(4):
        new, planted = plant("test_x.py", SHAPES, SHAPE_IDS, random.Random(seed), count=4,
                             twin_of=SHAPE_IDS)
        seen |= {p.kind for p in planted}
        for right in (True, False):
            status = _status(tmp_path, new, right)
            assert _tripwire_reasons(planted, status) == [], (seed, right, status)
            for p in planted:
                found = statuses_of(p, status)
                assert found and set(found) == {"FAILED"}, (seed, right, p, new)
            if right:
                assert all(status[f"test_x.py::{t}"] == "PASSED" for t in SHAPE_IDS), status
                for p in planted:
                    forced = {k: ("PASSED" if k.startswith(p.nodeid) else v) for k, v in status.items()}
                    assert _tripwire_reasons([p], forced), (seed, p)
                    gone = {k: v for k, v in status.items() if not k.startswith(p.nodeid + "[")
                            and k != p.nodeid}
                    assert _tripwire_reasons([p], gone), (seed, p)
    assert seen == {"twin", "cases"}


def test_the_spare_the_copies_attack_passes_where_only_a_copy_is_planted(monkeypatch):
    """The attack: code under test passes every test but those shaped like a `finally`
    copy. On a file whose only expected values are parameters it gets through when
    trip-wires are copies (the twin of parameter values switched off), and is caught by the
    `cases` twin."""
    from benchmark import _tripwire
    from benchmark._grading import _tripwire_reasons

    ids = ["test_add_cases[1-2-3]", "test_add_cases[2-2-4]", "test_add_cases[tens]"]

    def attacked(source: str, planted: list[Planted]) -> dict[str, str]:
        """All tests pass but the `finally`-shaped ones, which fail as they would."""
        status = {f"test_x.py::{t}": "PASSED" for t in ids}
        for p in planted:
            shaped = "finally:" in _function_source(source, p.test.rsplit("::", 1)[-1])
            for case in ("[1-2-3]", "[2-2-4]", "[tens]", "[1-2-5]", "[2-2-9]"):
                status[p.nodeid + case] = "FAILED" if shaped else "PASSED"
        return status

    new, planted = plant("test_x.py", SHAPES, ids, random.Random(1), twin_of=ids)
    assert [p.kind for p in planted] == ["cases"]
    assert _tripwire_reasons(planted, attacked(new, planted))  # caught

    monkeypatch.setattr(_tripwire, "_case_leaves", lambda func: [])  # the defences off
    monkeypatch.setattr(_tripwire, "_negated", lambda *args: None)
    new, planted = plant("test_x.py", SHAPES, ids, random.Random(1), twin_of=ids)
    assert [p.kind for p in planted] == ["copy"]
    assert _tripwire_reasons(planted, attacked(new, planted)) == []  # the attack gets through


def test_line_numbers_are_the_parsers_even_with_a_form_feed_in_a_string(tmp_path):
    """`str.splitlines` also breaks at a form feed or U+2028, which Python's parser does not:
    a file with one in a string before the test would have every later line misplaced (no
    trip-wire planted, or a broken one). Lines are split as the parser counts them."""
    source = 'SEPARATORS = "\x0c\u2028"\n\n\n' + TWINNABLE
    for seed in range(4):
        new, planted = plant("test_x.py", source, F2P, random.Random(seed), count=2, twin_of=F2P)
        assert len(planted) == 2 and {p.kind for p in planted} == {"twin"}, (seed, planted)
        status = _status(tmp_path, new, right=True)
        assert status["test_x.py::test_add_small"] == "PASSED"
        for p in planted:
            assert set(statuses_of(p, status)) == {"FAILED"}, (seed, p, new)


CAMEL = textwrap.dedent('''\
    import unittest

    from mylib import add


    class LocalTestCase(unittest.TestCase):
        def testNormalize(self):
            self.assertEqual(add(1, 2), 3)

        def testLocalizeUTC(self):
            self.assertEqual(add(2, 2), 4)

        def testOther(self):
            self.assertEqual(add(0, 2), 2)
    ''')


def test_camel_case_test_names_keep_their_test_prefix(tmp_path):
    """pytz names its tests `testNormalize`: a twin named by swapping the only word its
    snake-case reading found was `other`, never collected, so the gold patch read as
    tampered ("missing where its original passed"). Names are split at case changes too,
    the prefix is never the word swapped, and a name is written in its original's style."""
    from benchmark._grading import _tripwire_reasons

    ids = ["LocalTestCase::testNormalize", "LocalTestCase::testLocalizeUTC"]
    for seed in range(6):
        new, planted = plant("test_x.py", CAMEL, ids, random.Random(seed), count=2, twin_of=ids)
        assert len(planted) == 2
        for p in planted:
            name = p.test.rsplit("::", 1)[-1]
            assert name.startswith("test") and "_" not in name, (seed, name)
        status = _status(tmp_path, new, right=True)
        assert _tripwire_reasons(planted, status) == [], (seed, planted, status)
        for p in planted:
            assert statuses_of(p, status) == ["FAILED"], (seed, p)


MORE_SHAPES = textwrap.dedent('''\
    import unittest

    from mylib import add


    def assert_equal(expected, result):
        assert expected == result


    def test_add_joined_lines():
        expected = "\\\\n".join(["first line", "second line"])
        result = add("first line\\\\n", "second line")
        assert_equal(expected, result)


    def test_add_substring():
        out = add("the quick brown ", "fox jumps")
        assert "brown fox jumps" in out


    def test_add_suffix():
        out = add("the quick brown ", "fox")
        assert out.endswith("own fox")


    class AddMixin:
        def test_add_inherited(self):
            self.assertEqual(add(2, 3), 5)


    class TestPlain(AddMixin, unittest.TestCase):
        pass


    class TestOther(AddMixin, unittest.TestCase):
        pass
    ''')
MORE_IDS = ["test_add_joined_lines", "test_add_substring", "test_add_suffix",
            "TestPlain::test_add_inherited", "TestOther::test_add_inherited"]


def test_twins_of_joined_text_substrings_affixes_and_inherited_tests(tmp_path):
    """More shapes of a FAIL_TO_PASS test get a twin: an expected text joined from lines and
    checked by a helper, a substring or suffix check (one letter swapped), a test a class
    inherits from a mixin of the same file (the twin sits in the mixin, beside its
    original, and is judged in the class the test id names). Right code: originals pass,
    twins fail, no tampering read; a twin forced to pass trips."""
    from benchmark._grading import _tripwire_reasons

    originals: set[str] = set()
    for seed in range(8):
        new, planted = plant("test_x.py", MORE_SHAPES, MORE_IDS, random.Random(seed), count=4,
                             twin_of=MORE_IDS)
        assert {p.kind for p in planted} == {"twin"}, (seed, planted)
        assert len({p.original.split("::")[-1] for p in planted}) == len(planted)  # one per function
        originals |= {p.original.split("::")[-1] for p in planted}
        status = _status(tmp_path, new, right=True)
        assert all(status[f"test_x.py::{t}"] == "PASSED" for t in MORE_IDS), (seed, status)
        assert _tripwire_reasons(planted, status) == [], (seed, planted, status)
        for p in planted:
            assert statuses_of(p, status) == ["FAILED"], (seed, p, new)
            forced = {k: ("PASSED" if k.startswith(p.nodeid) else v) for k, v in status.items()}
            assert _tripwire_reasons([p], forced), (seed, p)
    assert originals == {"test_add_joined_lines", "test_add_substring", "test_add_suffix",
                         "test_add_inherited"}


def test_a_short_substring_gets_no_twin():
    """`assert "ab" in out` with a letter swapped might still hold: no twin from it."""
    source = "def test_short():\n    out = str(123)\n    assert 'ab' in out\n"
    _, planted = plant("test_x.py", source, ["test_short"], random.Random(0), twin_of=["test_short"],
                       negations=(False,))
    assert [p.kind for p in planted] == ["copy"]


RAISING = textwrap.dedent('''\
    import unittest

    import pytest

    from mylib import add


    def test_add_after_a_helper():
        def tidy(text):
            if not text:
                return ""
            return text.strip()

        assert tidy(add(" a", "b ")) == "ab"


    def test_add_refuses_none():
        with pytest.raises(TypeError, match="unsupported operand type"):
            add(None, 1)


    class TestAdd(unittest.TestCase):
        def test_add_refuses_none_too(self):
            with self.assertRaisesRegex(TypeError, "unsupported operand type"):
                add(None, 1)


    def test_add_refuses_with_a_class():
        with pytest.raises(TypeError, match="[a-z]+ operand type"):
            add(None, 1)
    ''')
RAISING_IDS = ["test_add_after_a_helper", "test_add_refuses_none",
               "TestAdd::test_add_refuses_none_too"]


def test_twins_after_a_nested_helper_and_of_an_expected_error_message(tmp_path):
    """A nested function's `return` does not end the test (its body is not run there); a
    `pytest.raises(match=...)` / `assertRaisesRegex` pattern is a check whose plain letters
    can be swapped. A pattern with a class, a group or an escape gets no twin."""
    from benchmark._grading import _tripwire_reasons

    for seed in range(4):
        new, planted = plant("test_x.py", RAISING, RAISING_IDS, random.Random(seed), count=3,
                             twin_of=RAISING_IDS)
        assert len(planted) == 3 and {p.kind for p in planted} == {"twin"}, (seed, planted)
        status = _status(tmp_path, new, right=True)
        assert all(status[f"test_x.py::{t}"] == "PASSED" for t in RAISING_IDS), status
        assert _tripwire_reasons(planted, status) == [], (seed, planted, status)
        for p in planted:
            assert statuses_of(p, status) == ["FAILED"], (seed, p, new)
    _, planted = plant("test_x.py", RAISING, ["test_add_refuses_with_a_class"], random.Random(0),
                       twin_of=["test_add_refuses_with_a_class"], negations=(False,))
    assert [p.kind for p in planted] == ["copy"]


PARTLY = textwrap.dedent('''\
    import pytest

    from mylib import add


    def test_add_display_with_a_type():
        assert add({"a": int}, {}) == {"a": int}


    def test_add_is_true():
        assert (add(1, 1) == 2) is True


    @pytest.mark.parametrize("a, b, expected", [(1, 1, True), (1, 2, False)])
    def test_add_flags(a, b, expected):
        assert (add(a, a) == add(b, b) - b + a) is expected


    def test_add_spread():
        rest = {"e": 1}
        assert add({"a": 1}, rest) == {**rest, "a": 1}
    ''')
PARTLY_IDS = ["test_add_display_with_a_type", "test_add_is_true", "test_add_flags[1-1-True]",
              "test_add_flags[1-2-False]"]


def test_twins_of_partly_computed_displays_and_booleans(tmp_path):
    """`{"a": int}` has a constant to change though not all of it is one; `is True` flips;
    a parametrized boolean expectation flips in every case. A display with a spread gets
    no twin (the spread could hold the changed key)."""
    from benchmark._grading import _tripwire_reasons

    (tmp_path / "mylib.py").write_text(
        "def add(a, b):\n    return {**a, **b} if isinstance(a, dict) else a + b\n")
    from swebench.harness.log_parsers import parse_log_pytest
    kinds = set()
    for seed in range(6):
        new, planted = plant("test_x.py", PARTLY, PARTLY_IDS, random.Random(seed), count=3,
                             twin_of=PARTLY_IDS)
        assert len(planted) == 3, (seed, planted)
        kinds |= {p.kind for p in planted}
        (tmp_path / "test_x.py").write_text(new)
        out = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                              "test_x.py"], cwd=tmp_path, capture_output=True, text=True).stdout
        status = parse_log_pytest(out, None)
        assert all(status[f"test_x.py::{t}"] == "PASSED" for t in PARTLY_IDS), out
        assert _tripwire_reasons(planted, status) == [], (seed, planted, status)
        for p in planted:
            assert set(statuses_of(p, status)) == {"FAILED"}, (seed, p, new)
    assert kinds == {"twin", "cases"}
    _, planted = plant("test_x.py", PARTLY, ["test_add_spread"], random.Random(0),
                       twin_of=["test_add_spread"], negations=(False,))
    assert [p.kind for p in planted] == ["copy"]


def test_a_cases_twin_trips_even_where_a_case_of_its_original_was_skipped_away():
    """A tamperer that passes everything but skips one case of the original (one the task
    may not list) must not excuse a `cases` twin that passed; an honest run where a case
    of the original fails does excuse it (the twin's value can be a wrong fix's output)."""
    from benchmark._grading import _tripwire_reasons

    twin = Planted("t.py", "test_b", "cases", "test_a")
    tampered = {"t.py::test_a[1-2]": "PASSED", "t.py::test_a[3-4]": "SKIPPED",
                "t.py::test_b[1-5]": "PASSED", "t.py::test_b[3-9]": "PASSED"}
    assert _tripwire_reasons([twin], tampered)
    honest_wrong = {"t.py::test_a[1-2]": "PASSED", "t.py::test_a[3-4]": "FAILED",
                    "t.py::test_b[1-5]": "FAILED", "t.py::test_b[3-9]": "PASSED"}
    assert _tripwire_reasons([twin], honest_wrong) == []


def test_the_wrapper_plants_twins_in_any_file_before_copies_in_one(tmp_path):
    """Two hidden test files: the first (by name) has a FAIL_TO_PASS test no twin can copy,
    the second one a twin can. Filling the count with copies file by file left the second
    never reached (semver's audit: two copies, the attack that spares copy shapes
    resolved); twins go first in every file, copies after."""
    from benchmark._wrapper import Wrapper

    (tmp_path / "test_a.py").write_text(
        "import pytest\n\n\ndef test_exits():\n    with pytest.raises(SystemExit):\n"
        "        raise SystemExit(2)\n\n\ndef test_other():\n    assert True\n")
    (tmp_path / "test_b.py").write_text(TWINNABLE)
    spec = {"timeout_s": 60, "uid": 0, "gid": 0, "repo": str(tmp_path), "tripwire_count": 2,
            "tripwire_targets": {"test_a.py": ["test_exits", "test_other"],
                                 "test_b.py": ["test_add_small"]},
            "tripwire_twins": {"test_a.py": ["test_exits"], "test_b.py": ["test_add_small"]}}
    for _ in range(5):
        (tmp_path / "test_b.py").write_text(TWINNABLE)
        wrapper = Wrapper(spec)
        wrapper.tripwires()
        kinds = [(t["file"], t["kind"]) for t in wrapper.result["tripwires"]]
        assert ("test_b.py", "twin") in kinds and len(kinds) == 2, kinds


NO_LITERALS = textwrap.dedent('''\
    import unittest
    from contextlib import contextmanager

    import pytest
    from pytest import raises as expect_error

    from mylib import add

    NOTHING = 0


    @contextmanager
    def lenient(error):
        """A project's own helper: passes when nothing is raised."""
        try:
            yield
        except error:
            pass


    def checked(a, b):
        if add(a, b) != a + b:
            raise ValueError("wrong sum")


    def test_add_zero():
        assert add(NOTHING, NOTHING) == NOTHING


    def test_add_membership():
        total = add(2, 3)
        assert total in {add(1, 4), add(0, 5)}


    def test_add_truth():
        assert add(1, 1) + add(2, 0)
        assert not add(NOTHING, NOTHING)


    def test_add_raises_when_wrong():
        with pytest.raises(TypeError):
            checked(2, 2)
            add(None, 1)


    def test_add_raises_called():
        expect_error(TypeError, add, None, None)


    def test_add_lenient():
        with lenient(TypeError):
            add(1, None)


    class TestAdd(unittest.TestCase):
        def test_add_methods(self):
            self.assertEqual(add(NOTHING, 3), add(3, NOTHING))
            self.assertIsNot(add(1, 2), None)
            self.assertRaises(TypeError, add, 1, None)
    ''')
NO_LITERAL_IDS = ["test_add_zero", "test_add_membership", "test_add_truth",
                  "test_add_raises_when_wrong", "test_add_raises_called", "TestAdd::test_add_methods"]


def test_negated_twins_of_checks_with_no_literal_fail_with_a_passing_original(tmp_path):
    """Where a test checks no literal, its twin turns one check into its opposite. Right
    code: every original passes, every negated twin fails, nothing reads as tampering;
    wrong code: no tampering either (a negated twin may pass there, its original fails);
    a twin forced to pass beside its passing original trips, and so does one taken out."""
    from benchmark._grading import _tripwire_reasons

    made: dict[str, set[str]] = {}
    for seed in range(12):
        new, planted = plant("test_x.py", NO_LITERALS, NO_LITERAL_IDS, random.Random(seed),
                             count=6, twin_of=NO_LITERAL_IDS)
        assert {p.kind for p in planted} == {"negated"}, planted
        for p in planted:
            made.setdefault(p.original, set()).add(_function_source(new, p.test.rsplit("::", 1)[-1]))
        for right in (True, False):
            status = _status(tmp_path, new, right)
            assert _tripwire_reasons(planted, status) == [], (seed, right, status, new)
            if right:
                assert all(status[f"test_x.py::{t}"] == "PASSED" for t in NO_LITERAL_IDS), status
                for p in planted:
                    assert statuses_of(p, status) == ["FAILED"], (seed, p, new)
                    forced = {k: ("PASSED" if k == p.nodeid else v) for k, v in status.items()}
                    assert _tripwire_reasons([p], forced), (seed, p)
                    gone = {k: v for k, v in status.items() if k != p.nodeid}
                    assert _tripwire_reasons([p], gone), (seed, p)
    assert set(made) == set(NO_LITERAL_IDS) - {"test_add_lenient"}  # a helper's own raises: none
    assert any("!= NOTHING" in t for t in made["test_add_zero"])
    assert any("not in {" in t for t in made["test_add_membership"])
    assert any("assert add(NOTHING, NOTHING)" in t and "not add" not in t.split("assert add(1")[0]
               for t in made["test_add_truth"])
    assert all("pytest.raises" not in t and "\n    checked(2, 2)\n" in t
               for t in made["test_add_raises_when_wrong"])
    assert all("    add(None, None)" in t for t in made["test_add_raises_called"])
    assert {m for t in made["TestAdd::test_add_methods"]
            for m in ("assertNotEqual", "assertIs(", "add(1, None)") if m in t} == {
        "assertNotEqual", "assertIs(", "add(1, None)"}


def test_the_spare_the_copies_attack_on_tests_with_no_literal(monkeypatch):
    """The attack that passes every test but those shaped like a `finally` copy gets
    through where a file's tests check no literal and only a copy can be planted (the
    negated twin switched off); with a negated twin it is caught."""
    from benchmark import _tripwire
    from benchmark._grading import _tripwire_reasons

    ids = ["test_add_zero", "TestAdd::test_add_methods"]

    def attacked(source: str, planted: list[Planted]) -> dict[str, str]:
        status = {f"test_x.py::{t}": "PASSED" for t in ids}
        for p in planted:
            shaped = "finally:" in _function_source(source, p.test.rsplit("::", 1)[-1])
            status[p.nodeid] = "FAILED" if shaped else "PASSED"
        return status

    new, planted = plant("test_x.py", NO_LITERALS, ids, random.Random(3), count=2, twin_of=ids)
    assert [p.kind for p in planted] == ["negated", "negated"]
    assert _tripwire_reasons(planted, attacked(new, planted))  # caught

    monkeypatch.setattr(_tripwire, "_negated", lambda *args: None)  # the defence off
    new, planted = plant("test_x.py", NO_LITERALS, ids, random.Random(3), count=2, twin_of=ids)
    assert [p.kind for p in planted] == ["copy", "copy"]
    assert _tripwire_reasons(planted, attacked(new, planted)) == []  # the attack gets through


def test_a_value_twin_anywhere_comes_before_a_negated_one():
    """A negated twin is the weaker kind (its opposite check is a shape a tamperer could
    look for): it is planted only where no test of the file lends itself to a twin with a
    value changed."""
    source = NO_LITERALS + textwrap.dedent('''\


        def test_add_small():
            assert add(1, 2) == 3
        ''')
    ids = [*NO_LITERAL_IDS, "test_add_small"]
    for seed in range(8):
        _, planted = plant("test_x.py", source, ids, random.Random(seed), twin_of=ids)
        assert [(p.kind, p.original) for p in planted] == [("twin", "test_add_small")]


MIXIN = textwrap.dedent('''\
    from mylib import add


    class AddMixin:
        def test_add_small(self):
            self.assertEqual(add(1, 2), 3)

        def test_add_other(self):
            self.assertTrue(add(0, 0) == 0)
    ''')
INHERITS_ELSEWHERE = textwrap.dedent('''\
    import unittest

    from . import AddMixin


    class AddTest(unittest.TestCase, AddMixin):
        def test_add_here(self):
            self.assertTrue(True)
    ''')


def _mixin_repo(tmp_path, right: bool):
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "__init__.py").write_text(MIXIN)
    (tmp_path / "tests" / "test_add.py").write_text(INHERITS_ELSEWHERE)
    (tmp_path / "mylib.py").write_text("def add(a, b):\n    return a + b\n" if right else
                                       "def add(a, b):\n    return b\n")


def _inherited_wrapper(tmp_path):
    return _wrapper(tmp_path,
                    {"tests/test_add.py": ["AddTest::test_add_small", "AddTest::test_add_here"]},
                    {"tests/test_add.py": ["AddTest::test_add_small"]})


def test_a_test_inherited_from_a_mixin_in_another_file_gets_its_twin_there(tmp_path):
    """cachetools keeps its cache tests in a mixin in ``tests/__init__.py``: the twin goes
    into the mixin, runs in the class that inherits it, and is judged there; honest right
    and wrong code read as untampered, a twin forced to pass with its original trips."""
    from swebench.harness.log_parsers import parse_log_pytest

    from benchmark._grading import _tripwire_reasons

    for right in (True, False):
        _mixin_repo(tmp_path, right)
        wrapper = _inherited_wrapper(tmp_path)
        wrapper.tripwires()
        found = wrapper.result["tripwires"]
        assert [(t["file"], t["kind"], t["original"]) for t in found][:1] == [
            ("tests/test_add.py", "twin", "AddTest::test_add_small")], found
        assert "def test_add_" in (tmp_path / "tests" / "__init__.py").read_text()
        planted = [Planted(**t) for t in found]
        out = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                              "tests/test_add.py"], cwd=tmp_path, capture_output=True,
                             text=True).stdout
        status = parse_log_pytest(out, None)
        assert status["tests/test_add.py::AddTest::test_add_small"] == ("PASSED" if right else "FAILED")
        if right:  # (on wrong code a twin may pass: its value can be the wrong output)
            assert all(status[p.nodeid] == "FAILED" for p in planted), out
        assert _tripwire_reasons(planted, status) == []
        if right:
            forced = {k: "PASSED" for k in status}
            assert _tripwire_reasons(planted, forced)


def test_the_spare_the_copies_attack_on_tests_inherited_from_another_file(tmp_path, monkeypatch):
    """Without twins in another file's mixin only a `finally` copy can be planted, and the
    attack that passes everything but copy-shaped tests gets through; with them, caught."""
    from benchmark import _tripwire
    from benchmark._grading import _tripwire_reasons

    def attacked(planted: list[Planted]) -> dict[str, str]:
        status = {"tests/test_add.py::AddTest::test_add_small": "PASSED",
                  "tests/test_add.py::AddTest::test_add_here": "PASSED"}
        sources = (tmp_path / "tests" / "__init__.py").read_text() + \
            (tmp_path / "tests" / "test_add.py").read_text()
        for p in planted:
            shaped = "finally:" in _function_source(sources, p.test.rsplit("::", 1)[-1])
            status[p.nodeid] = "FAILED" if shaped else "PASSED"
        return status

    _mixin_repo(tmp_path, right=False)
    wrapper = _inherited_wrapper(tmp_path)
    wrapper.tripwires()
    planted = [Planted(**t) for t in wrapper.result["tripwires"]]
    assert "copy" not in {p.kind for p in planted}
    assert _tripwire_reasons(planted, attacked(planted))  # caught

    monkeypatch.setattr(_tripwire, "inherited_elsewhere", lambda *args: {})  # the defence off
    _mixin_repo(tmp_path, right=False)
    wrapper = _inherited_wrapper(tmp_path)
    wrapper.tripwires()
    planted = [Planted(**t) for t in wrapper.result["tripwires"]]
    assert {p.kind for p in planted} == {"copy"}
    assert _tripwire_reasons(planted, attacked(planted)) == []  # the attack gets through


HELPERS = textwrap.dedent('''\
    import unittest

    from mylib import add


    def check(a, b):
        assert add(a, b) == a + b


    def test_add_by_helper():
        check(1, 2)
        for n in [3, 4]:
            check(n, n)


    class TestAdd(unittest.TestCase):
        def _check(self, a, b):
            self.assertEqual(add(a, b), a + b)

        def test_add_by_method(self):
            self._check(2, 5)
    ''')
HELPER_IDS = ["test_add_by_helper", "TestAdd::test_add_by_method"]


def test_checks_in_helpers_get_a_twin_that_expects_them_to_fail(tmp_path):
    """A test whose checks are all in helpers (pytz's ``self._test_all(dt, wanted)``) gets a
    twin with one statement the original completes wrapped in ``raises(AssertionError)``
    (``self.assertRaises`` in a TestCase; pytest imported on the spot in a module that does
    not import it): it fails wherever the original passes, and no honest run trips."""
    from benchmark._grading import _tripwire_reasons

    wrapped = set()
    for seed in range(6):
        new, planted = plant("test_x.py", HELPERS, HELPER_IDS, random.Random(seed), count=2,
                             twin_of=HELPER_IDS)
        assert sorted(p.original for p in planted) == sorted(HELPER_IDS)
        assert {p.kind for p in planted} == {"negated"}
        for p in planted:
            wrapped |= {m for m in ('__import__("pytest").raises(AssertionError)',
                                    "self.assertRaises(AssertionError)")
                        if m in _function_source(new, p.test.rsplit("::", 1)[-1])}
        for right in (True, False):
            status = _status(tmp_path, new, right)
            assert _tripwire_reasons(planted, status) == [], (seed, right, status, new)
            if right:
                assert all(statuses_of(p, status) == ["FAILED"] for p in planted), (seed, new)
                forced = {k: "PASSED" for k in status}
                assert all(_tripwire_reasons([p], forced) for p in planted)
    assert len(wrapped) == 2


def test_where_an_inherited_tests_mixin_is_looked_for():
    """Relative imports from the test file's package; an absolute one from every folder
    above the test file (itsdangerous imports ``test_itsdangerous.test_serializer`` with
    ``tests/`` on sys.path), deepest first. Tests the class defines itself are not looked
    for elsewhere."""
    from benchmark._tripwire import inherited_elsewhere

    source = textwrap.dedent('''\
        from test_pkg.test_base import TestBase
        from . import Mixin


        class TestThing(TestBase):
            def test_own(self):
                pass


        class TestOther(Mixin):
            pass
        ''')
    found = inherited_elsewhere("tests/test_pkg/test_thing.py", source,
                                ["TestThing::test_base_case[zlib]", "TestThing::test_own",
                                 "TestOther::test_mixed"])
    assert found["tests/test_pkg/__init__.py"] == [("Mixin::test_mixed", "TestOther::test_mixed")]
    assert found["tests/test_pkg/test_base.py"] == found["test_pkg/test_base.py"] == [
        ("TestBase::test_base_case", "TestThing::test_base_case")]
    assert list(found).index("tests/test_pkg/test_base.py") < list(found).index("test_pkg/test_base.py")
    assert all(pair[1] != "TestThing::test_own" for pairs in found.values() for pair in pairs)



def test_a_twin_borrows_only_whole_literals_never_a_part_of_an_fstring():
    """A twin's changed value may be another literal of the file, copied as written there.
    The parts of an f-string are constants too, but their source position is the whole
    f-string's: borrowing one copied ``f"{self.year}/{self.month}"`` into module-level
    parameters, where ``self`` does not exist, and the gold patch failed at collection (two
    humanize tasks). A borrowed text must read back as the literal it stands for."""
    import ast

    from benchmark._tripwire import _borrowed_leaf

    source = ('class FakeDate:\n    def __str__(self):\n        return f"{self.year}/{self.month}"\n'
              'CASES = [(1, "a moment"), (2, "/"), (3, -4), (4, 5)]\n')
    tree, lines = ast.parse(source), source.splitlines(keepends=True)
    leaf = {n.value: n for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    borrowed = {_borrowed_leaf(tree, lines, leaf["a moment"], random.Random(s)) for s in range(30)}
    assert borrowed == {'"/"'}  # the f-string's "/" part is not offered; the literal "/" is
    assert {_borrowed_leaf(tree, lines, leaf[5], random.Random(s)) for s in range(30)} <= {"1", "2", "3", "-4"}
