"""Trip-wires: tests that must fail, planted in the hidden tests of each grading.

No list of tricks catches code that rewrites pytest from inside the test process (a report
made "passed", a fake session printed before ``os._exit(0)``). A trip-wire does: a test that
must fail whatever the code under test does. If one comes out anything but failed, or goes
missing from a run that reported its file's other tests, the run was tampered with.

A trip-wire is only as good as it is hard to tell from the tests a tamperer needs to pass.
Code under test can read every test's source, so the preferred kind is a **twin**: a
verbatim copy of a FAIL_TO_PASS test (decorators, parametrization and all), placed right
above or right below it at random, under a fresh name made of words of the same file, with
one literal of one equality assertion changed (``assert f(x) == 3`` becomes ``== 8``). Both
fail on the unfixed code, so a tamperer that passes failing tests must pass the twin too (and
is caught) or guess which of two near-identical tests is the real one. A correct fix passes
the original and so reaches the twin's changed assertion, which fails: the assertion is a
top-level statement with no ``return``, ``yield`` or skip before it. Where a test checks no
literal, its twin turns one such check into its opposite (``assertEqual`` into
``assertNotEqual``, ``pytest.raises(E)`` dropped so that the error escapes, or where its
checks are all in helpers, a statement it completes wrapped in
``pytest.raises(AssertionError)``): it may pass on
the unfixed code, but never together with its original. Where no FAIL_TO_PASS test lends
itself, the fallback is a **copy** whose body runs in ``try`` with a failing assertion in
``finally`` (it fails whatever happens, but its shape can be recognised).

Standard library only: the grading wrapper plants trip-wires in the task container after the
hidden test patch is applied (the agent's sandbox never holds them), with randomness from
``os.urandom``. The host imports it for the names' matching rule.
"""

from __future__ import annotations

import ast
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Planted", "added_test_names", "cases_of", "plant", "statuses_of"]

_WORD = re.compile(r"[a-z][a-z0-9]{2,}")
_FALLBACK_WORDS = ("value", "result", "case", "input", "output", "check", "basic", "empty",
                   "default", "handles", "returns", "simple", "keys", "items", "order")


@dataclass(frozen=True)
class Planted:
    """One trip-wire: its file and its id there (``name`` or ``Class::name``)."""

    file: str
    test: str
    kind: str = "copy"
    """``twin`` (a FAIL_TO_PASS test with one expected literal changed), ``cases`` (a twin of
    a parametrized test with the expected value of every case changed: its case ids may
    differ from its original's), ``negated`` (a twin with one check turned into its
    opposite, where the test checks no literal) or ``copy`` (``finally``)."""
    original: str = ""
    """The id in `file` of the test it was made from (``name`` or ``Class::name``)."""

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.test}"


def statuses_of(planted: Planted, status_map: dict[str, str]) -> list[str]:
    """Every status the log gives this trip-wire (a parametrized copy has several)."""
    return list(cases_of(planted.nodeid, status_map).values())


def cases_of(nodeid: str, status_map: dict[str, str]) -> dict[str, str]:
    """The statuses of test `nodeid`'s runs by parameters (``""`` when it has none):
    a twin's case ``[p]`` is its original's case ``[p]``."""
    return {key[len(nodeid):]: status for key, status in status_map.items()
            if key == nodeid or key.startswith(nodeid + "[")}


_DEF = re.compile(r"^[+-]\s*(?:async\s+)?def\s+(test\w*)\s*\(")


def added_test_names(test_patch: str) -> dict[str, list[str]]:
    """Per file, the test functions a patch adds (defined on an added line, on no removed
    one): names that code under test cannot have read in the repo."""
    added: dict[str, dict[str, None]] = {}
    removed: dict[str, set[str]] = {}
    path = None
    for line in test_patch.splitlines():
        if line.startswith("+++ "):
            path = line[4:].strip()
            path = path[2:] if path.startswith("b/") else None
            continue
        if line.startswith("--- ") or path is None:
            continue
        match = _DEF.match(line)
        if match and line[0] == "+":
            added.setdefault(path, {})[match[1]] = None
        elif match:
            removed.setdefault(path, set()).add(match[1])
    return {path: [n for n in names if n not in removed.get(path, set())]
            for path, names in added.items()}


def _targets(tree: ast.Module, name: str) -> tuple[ast.ClassDef | None, ast.FunctionDef] | None:
    """The plain (not async) test function `name` (``f`` or ``Class::f``) at module level or
    in a top-level class, or inherited by that class from a base class of the same file (a
    mixin of tests run by several classes): the class that defines it, and it."""
    owner, _, func = name.rpartition("::")
    func = func.split("[", 1)[0]
    if not owner:
        return next(((None, node) for node in tree.body
                     if isinstance(node, ast.FunctionDef) and node.name == func), None)
    if "::" in owner:
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    todo, seen = [owner], set()
    while todo:  # the class, then its bases defined here, depth first as Python looks
        current = classes.get(todo.pop(0))
        if current is None or current.name in seen:
            continue
        seen.add(current.name)
        for node in current.body:
            if isinstance(node, ast.FunctionDef) and node.name == func:
                return current, node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign)) and \
                    func in _bound_names(node):
                return None  # the class defines it some other way: leave it be
        todo[:0] = [base.id for base in current.bases if isinstance(base, ast.Name)]
    return None


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    return {target.id for target in getattr(node, "targets", []) if isinstance(target, ast.Name)}


def _owner(test: str) -> str:
    """``Class::`` of a test id (the class it runs in), or ``""``."""
    owner = test.split("[", 1)[0].rpartition("::")[0]
    return f"{owner}::" if owner else ""


def _parametrized(tree: ast.Module, test: str) -> bool:
    found = _targets(tree, test)
    return bool(found) and any(_is_parametrize(d) for d in found[1].decorator_list)


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


def _copy(lines: list[str], func: ast.FunctionDef, new_name: str, assertion: str) -> str | None:
    """The function's source under `new_name`, its body in ``try`` and `assertion` in
    ``finally``; None where the source does not lend itself (a one-line def)."""
    body_start = _first_line(func.body[0])
    if body_start <= func.lineno:
        return None
    def_line = lines[func.lineno - 1]
    def_indent = def_line[: len(def_line) - len(def_line.lstrip())]
    body_line = lines[body_start - 1]
    body_indent = body_line[: len(body_line) - len(body_line.lstrip())]
    if not body_indent.startswith(def_indent) or body_indent == def_indent:
        return None
    unit = body_indent[len(def_indent):]
    kept = []  # parametrize only, every case as it is (a case is judged beside its
    # original's): any other decorator could skip, xfail or retry the copy
    for decorator in func.decorator_list:
        if _is_parametrize(decorator):
            text = _segment(lines, decorator)
            if not text:
                return None
            kept.append(def_indent + "@" + text + "\n")
    header = "".join(lines[func.lineno - 1: body_start - 1])
    header, count = re.subn(rf"\bdef\s+{re.escape(func.name)}\s*\(", f"def {new_name}(", header,
                            count=1)
    if not count:
        return None
    body = lines[body_start - 1: func.end_lineno]
    wrapped = "".join(unit + line if line.strip() else line for line in body)
    if not wrapped.endswith("\n"):
        wrapped += "\n"
    return ("".join(kept) + header + f"{body_indent}try:\n{wrapped}"
            f"{body_indent}finally:\n{body_indent}{unit}{assertion}\n")


def _is_parametrize(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "parametrize"


def _segment(lines: list[str], node: ast.AST) -> str:
    """`node`'s source (``ast.get_source_segment`` re-splits the whole file per call: a
    grading that reads a few hundred literals of a long test file spent seconds there)."""
    first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    if first is None or last is None:
        return ""
    begin, end = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]
    if first == last:
        return lines[first - 1].encode()[begin:end].decode()
    head = lines[first - 1].encode()[begin:].decode()
    tail = lines[last - 1].encode()[:end].decode()
    return "".join([head, *lines[first: last - 1], tail])


_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")
"""A word of a name, split at underscores and at case changes (``testNormalizeUTC``:
``test``, ``Normalize``, ``UTC``)."""


def _vocabulary(tree: ast.Module) -> list[str]:
    words: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            for token in _TOKEN.findall(node.name):
                word = token.lower()
                if word != "test" and _WORD.fullmatch(word):
                    words.setdefault(word)
    return list(words) if len(words) >= 4 else [*words, *_FALLBACK_WORDS]


def _camel(name: str) -> bool:
    """``testNormalize`` rather than ``test_normalize``."""
    return "_" not in name.strip("_") and any(c.isupper() for c in name)


def _spelled(word: str, like: str) -> str:
    """`word` in the case of `like` (``UTC``, ``Normalize``, ``normalize``)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def _collected_as(original: str, name: str) -> bool:
    """Whether `name` is collected as surely as `original` is: pytest (and unittest) find
    tests by their ``test`` prefix, so a name that loses it would be missing from the run
    and an honest run would read as tampered (``testNormalize`` once became ``other``)."""
    return not original.startswith("test") or name.startswith("test")


def _fresh_name(original: str, vocabulary: list[str], taken: set[str], rng: random.Random) -> str:
    while True:
        words = rng.sample(vocabulary, k=min(3, len(vocabulary)))
        if original.startswith("test"):
            name = ("test" + "".join(w.capitalize() for w in words) if _camel(original)
                    else "test_" + "_".join(words))
        else:  # a project's own prefix (``python_functions = check_*``): kept in front
            name = original + "_" + "_".join(words)
        if name not in taken and not any(t.startswith(name) for t in taken):
            taken.add(name)
            return name


def _sibling_name(original: str, vocabulary: list[str], taken: set[str],
                  rng: random.Random) -> str:
    """A name for a twin, written as a sibling of `original` would be: one of its words
    swapped for another word of the file, in the same case (a relation that reads the same
    both ways), so the name does not tell which of the two is the copy. The ``test``
    prefix is never the word swapped."""
    tokens = list(_TOKEN.finditer(original))
    lowered = {t.group().lower() for t in tokens}
    slots = [t for t in tokens[1:]  # never the first: it is the prefix tests are found by
             if _WORD.fullmatch(t.group().lower()) and t.group().lower() != "test"]
    for _ in range(50):
        if not slots:
            break
        slot = rng.choice(slots)
        other = rng.choice(vocabulary)
        if other in lowered:
            continue
        name = original[: slot.start()] + _spelled(other, slot.group()) + original[slot.end():]
        if not _collected_as(original, name):
            continue
        if name not in taken and not any(t.startswith(name) or name.startswith(t + "_")
                                         for t in taken if t.startswith("test")):
            taken.add(name)
            return name
    return _fresh_name(original, vocabulary, taken, rng)


def plant(path: str, source: str, wanted: list[str], rng: random.Random,
          *, count: int = 1, twin_of: Iterable[str] = (),
          fresh_names: Iterable[str] = (), negations: Iterable[bool] = (False, True),
          reserved: Iterable[str] = ()) -> tuple[str, list[Planted]]:
    """Plant up to `count` trip-wires in the test file `path` (its text `source`): twins of
    tests among `twin_of` (FAIL_TO_PASS ids within this file: ``f``, ``f[p]``,
    ``Class::f``) where one lends itself, those named in `fresh_names` first (tests the
    hidden test patch adds: code under test cannot know them from the repo), else copies of
    tests among `wanted`, picked at random. `negations` says which twins are tried, in
    order: ``False`` one with a value changed, ``True`` one with a check negated; no new name
    is one of `reserved` (the tests the task names in this file, which a class may inherit
    from another file; the tests of a class elsewhere that inherits one here). Returns the
    new source and what was planted (nothing when no test lends itself; a file that no
    longer compiles is left as it was)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, []
    # lines as the parser counts them (``str.splitlines`` also breaks at a form feed or
    # U+2028 inside a string, and every line number after it would be off)
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", source)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    vocabulary = _vocabulary(tree)
    taken = _names_in(tree)
    # and every test the task names here: a class may inherit one from a base defined
    # elsewhere, which a trip-wire of that name would override
    taken |= {test.rsplit("::", 1)[-1].split("[", 1)[0] for test in (*wanted, *twin_of)}
    taken |= set(reserved)
    inserts: list[tuple[int, int, str, Planted]] = []  # (at line index, order, text, planted)
    used: set[int] = set()  # one trip-wire per original test function (by id())
    used_classes: set[str] = set()  # one ``finally`` copy per class, at its end
    fresh = set(fresh_names)
    order = sorted(_shuffled(twin_of, rng), key=lambda t: t.rsplit("::", 1)[-1] not in fresh)
    # a twin with a changed value where any test lends itself, before a negated one
    for test, negate in [(test, negate) for negate in negations for test in order]:
        if len(inserts) >= count:
            break
        found = _targets(tree, test)
        if found is None or id(found[1]) in used:
            continue
        cls, func = found
        made = _twin(tree, lines, func, _sibling_name(func.name, vocabulary, taken, rng), rng,
                     negate=negate)
        if made is None:
            continue
        text, name, kind = made
        used.add(id(func))
        owner = _owner(test)  # judged in the class the test id names (a mixin's twin runs
        planted = Planted(path, owner + name, kind, owner + func.name)  # in every subclass)
        gap = "\n" if cls else "\n\n"
        if rng.random() < 0.5:  # above the original
            inserts.append((_first_line(func) - 1, 2, text + gap, planted))
        else:
            inserts.append((func.end_lineno or func.lineno, 2, gap + text, planted))
    for test in _shuffled(wanted, rng, cheap_first=tree):
        if len(inserts) >= count:
            break
        found = _targets(tree, test)
        if found is None or id(found[1]) in used:
            continue
        cls, func = found
        if cls is not None and cls.name in used_classes:
            continue
        name = _fresh_name(func.name, vocabulary, taken, rng)
        left, right = rng.sample(vocabulary, 2)
        text = _copy(lines, func, name, f"assert {left!r} == {right!r}")
        if text is None:
            continue
        used.add(id(func))
        if cls is None:
            inserts.append((len(lines), 0, "\n\n" + text, Planted(path, name, "copy", func.name)))
        else:
            used_classes.add(cls.name)
            owner = _owner(test)
            inserts.append((cls.end_lineno or cls.lineno, 1, "\n" + text,
                            Planted(path, owner + name, "copy", owner + func.name)))
    if not inserts:
        return source, []
    out = list(lines)
    # Bottom up. At one line, what goes in later lands above: a class's copy and a twin of a
    # method go in after the module-level copies, so where a class ends the file they land
    # above those, inside the class.
    for at, _, text, _ in sorted(inserts, key=lambda item: (-item[0], item[1])):
        out[at:at] = [text]
    new_source = "".join(out)
    try:
        ast.parse(new_source)
    except SyntaxError:
        return source, []
    return new_source, [planted for _, _, _, planted in inserts]


def _names_in(tree: ast.Module) -> set[str]:
    """Every name the file defines, binds, imports or reads (``test_cases = [...]`` read
    by a parametrize, ``from helpers import test_thing``, ``self.test_mode``): a trip-wire
    of one of these names would rebind it, and the file's own tests could fail on an honest
    run."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".", 1)[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def _shuffled(tests: Iterable[str], rng: random.Random, *,
              cheap_first: ast.Module | None = None) -> list[str]:
    """Distinct test names (parameters cut), in random order; with `cheap_first`, the tests
    of that module that are not parametrized first."""
    names = list(dict.fromkeys(test.split("[", 1)[0] for test in tests))
    rng.shuffle(names)
    if cheap_first is not None:
        names.sort(key=lambda test: _parametrized(cheap_first, test))
    return names


# -- twins ------------------------------------------------------------------------------------

_ENDS_EARLY = {"skip", "xfail", "skipTest", "importorskip", "fail", "exit"}
_EQUAL_METHODS = {"assertEqual", "assertEquals", "assert_equal", "assertListEqual",
                  "assertTupleEqual", "assertDictEqual", "assertMultiLineEqual"}


def _twin(tree: ast.Module, lines: list[str], func: ast.FunctionDef, new_name: str,
          rng: random.Random, *, negate: bool = False) -> tuple[str, str, str] | None:
    """The function's whole source (decorators included) under `new_name`, with one literal
    of its first top-level equality assertion changed (kind ``twin``), or where that
    compares with a parameter, one literal of that parameter in every case (kind
    ``cases``); with `negate`, one check turned into its opposite instead (kind
    ``negated``). None where it has nothing of the kind that a passing run surely reaches."""
    if any(_changes_outcome(decorator) for decorator in func.decorator_list):
        return None
    if negate:
        negated = _negated(tree, lines, func, rng)
        if negated is None:
            return None
        text = _replace_spans(lines, _first_line(func), func.end_lineno or func.lineno, negated)
        return _renamed(text, func.name, new_name, "negated")
    kind, sites = "twin", _twinnable_leaves(func)
    if not sites:
        kind, sites = "cases", _case_leaves(func)
    if not sites:
        return None
    changes = []
    for leaves, strict in sites:  # one value per site: the assertion's, or each case's
        leaf = rng.choice(leaves)
        text = _segment(lines, leaf)
        changed = ((None if strict else _borrowed_leaf(tree, lines, leaf, rng))
                   or _changed_leaf(text, leaf, rng, swap_only=strict))
        if changed is None:
            return None
        changes.append((leaf, changed))
    text = _replace_spans(lines, _first_line(func), func.end_lineno or func.lineno, changes)
    return _renamed(text, func.name, new_name, kind)


def _renamed(text: str, name: str, new_name: str, kind: str) -> tuple[str, str, str] | None:
    text, count = re.subn(rf"\bdef\s+{re.escape(name)}\s*\(", f"def {new_name}(", text, count=1)
    return (text, new_name, kind) if count else None


_OUTCOME_MARKS = {"xfail", "skip", "skipif", "flaky", "repeat", "retry", "rerun", "timeout"}


def _changes_outcome(decorator: ast.expr) -> bool:
    """A decorator that can make a test anything but failed (a skip, an xfail, a retry, a
    parametrized case with marks of its own): a trip-wire never copies it."""
    for node in ast.walk(decorator):
        name = (node.attr if isinstance(node, ast.Attribute)
                else node.id if isinstance(node, ast.Name) else None)
        if name is not None and any(mark in name.lower() for mark in _OUTCOME_MARKS) \
                and name != "parametrize":
            return True
        if isinstance(node, ast.keyword) and node.arg == "marks":
            return True
    return False


Site = tuple[list[ast.expr], bool]
"""Where a twin changes one value: the literal leaves to choose from, and whether only a
letter may be swapped (a substring check: a borrowed or longer value could still match)."""


def _twinnable_leaves(func: ast.FunctionDef) -> list[Site]:
    """The numbers and strings of the literal side of the first top-level ``assert X ==
    LITERAL`` (or ``self.assertEqual(X, LITERAL)``) of `func`'s body, if nothing before it
    can end the test early (a ``return``, a ``yield``, a skip). The literal may be bound to a
    name first (``expected = {...}`` ... ``assert f(x) == expected``) if nothing in between
    reads the name. A substring check (``assert "a long text" in out``,
    ``out.endswith("text")``) counts too, its string changed by one letter. One site, or
    none (``[]``)."""
    bound: dict[str, ast.expr] = {}  # name -> its literal, while nothing has read it
    for statement in func.body:
        leaves = _equality_leaves(statement, bound)
        if leaves:
            return [(leaves, False)]
        leaves = _substring_leaves(statement)
        if leaves:
            return [(leaves, True)]
        if _may_end_early(statement):
            return []
        for name in _names_read(statement):
            bound.pop(name, None)
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        bound.pop(node.id, None)
            value = statement.value
            if (isinstance(statement, ast.Assign) and len(targets) == 1
                    and isinstance(targets[0], ast.Name) and value is not None
                    and _literal_leaves(value)):
                bound[targets[0].id] = value
    return []


def _names_read(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


_AFFIXES = {"startswith", "endswith"}
_IN_METHODS = {"assertIn"}
_SHORTEST_SUBSTRING = 8
"""A substring shorter than this, one letter changed, might still occur in the text."""


def _substring_leaves(statement: ast.stmt) -> list[ast.expr]:
    """The string of ``assert "..." in X``, ``self.assertIn("...", X)`` (at least
    `_SHORTEST_SUBSTRING` long) or ``assert X.startswith("...")`` / ``endswith``, where a
    letter can be swapped: the check then surely fails on any text the original passes on
    (an affix of the same length that differs; a long substring that does not occur)."""
    text: ast.expr | None = None
    any_length = True  # an affix: any length will do
    if isinstance(statement, (ast.With, ast.AsyncWith)):
        return _raises_match_leaves(statement)
    if isinstance(statement, ast.Assert):
        test = statement.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.In):
            text, any_length = test.left, False
        elif isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) \
                and test.func.attr in _AFFIXES and len(test.args) == 1 and not test.keywords:
            text = test.args[0]
    elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        call = statement.value
        if _call_name(call) in _IN_METHODS and len(call.args) >= 2 and not call.keywords:
            text, any_length = call.args[0], False
    if not (isinstance(text, ast.Constant) and isinstance(text.value, str)):
        return []
    if not any(c.isascii() and c.isalpha() for c in text.value):
        return []
    if not any_length and len(text.value) < _SHORTEST_SUBSTRING:
        return []
    return [text]


_REGEX_CONTEXTS = re.compile(r"\[|\(\?|\\[A-Za-z]")
"""Where a letter of a pattern is not matched as itself (a class, a group's name or flags,
an escape): a pattern with any is left alone."""


def _raises_match_leaves(statement: ast.With | ast.AsyncWith) -> list[ast.expr]:
    """``with pytest.raises(E, match="...")`` / ``self.assertRaisesRegex(E, "...")``: the
    pattern, if it is long and plain enough that one letter swapped surely stops it from
    matching the message the original matches."""
    for item in statement.items:
        call = item.context_expr
        if not isinstance(call, ast.Call):
            continue
        name = _call_name(call)
        pattern = None
        if name == "raises":
            pattern = next((k.value for k in call.keywords if k.arg == "match"), None)
        elif name in ("assertRaisesRegex", "assertRaisesRegexp") and len(call.args) >= 2:
            pattern = call.args[1]
        if (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)
                and len(pattern.value) >= _SHORTEST_SUBSTRING
                and not _REGEX_CONTEXTS.search(pattern.value)
                and any(c.isascii() and c.isalpha() for c in pattern.value)):
            return [pattern]
    return []


def _case_leaves(func: ast.FunctionDef) -> list[Site]:
    """For a test parametrized inline (``@pytest.mark.parametrize("x, expected", [(1, 2),
    ...])``) whose first top-level equality assertion compares something that does not read
    the parameter with the bare parameter (``assert f(x) == expected``), read by nothing
    before it: the literal leaves of that parameter's value in every case (a twin changes
    each). ``[]`` where the test is not of that shape."""
    for statement in func.body:
        sides = _equality_sides(statement)
        if sides:
            break
        if _may_end_early(statement):
            return []
    else:
        return []
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    if len(names) != 1:
        return []
    name = names[0]
    other = next(side for side in sides if not (isinstance(side, ast.Name) and side.id == name))
    earlier = func.body[: func.body.index(statement)]
    if name in _names_read(other) or any(name in _names_read(s) for s in earlier):
        return []
    for decorator in func.decorator_list:
        found = _parametrized_values(decorator, name)
        if found is not None:
            return found
    return []


def _parametrized_values(decorator: ast.expr, name: str) -> list[Site] | None:
    """The leaves of `name`'s value in each case of this ``parametrize`` decorator; None
    where it does not parametrize `name` inline with plain literal values (a list named
    elsewhere, ``indirect``, a case with marks: a twin must not guess)."""
    if not (isinstance(decorator, ast.Call) and _is_parametrize(decorator)) or len(decorator.args) < 2:
        return None
    if any(keyword.arg == "indirect" for keyword in decorator.keywords):
        return None
    argnames, argvalues = decorator.args[0], decorator.args[1]
    if isinstance(argnames, ast.Constant) and isinstance(argnames.value, str):
        names = [part.strip() for part in argnames.value.split(",") if part.strip()]
    elif isinstance(argnames, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in argnames.elts):
        names = [e.value for e in argnames.elts]  # type: ignore[union-attr]
    else:
        return None
    if name not in names or not isinstance(argvalues, (ast.List, ast.Tuple)) or not argvalues.elts:
        return None
    at = names.index(name)
    cases = []
    for case in argvalues.elts:
        if isinstance(case, ast.Call) and _call_name(case) == "param":
            if any(keyword.arg != "id" for keyword in case.keywords):
                return None
            values = list(case.args)
        elif len(names) == 1:
            values = [case]
        elif isinstance(case, (ast.Tuple, ast.List)):
            values = list(case.elts)
        else:
            return None
        if len(values) != len(names) or any(isinstance(v, ast.Starred) for v in values):
            return None
        leaves = _value_leaves(values[at])
        if not leaves:
            return None
        cases.append((leaves, False))
    return cases


def _call_name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _equality_sides(statement: ast.stmt) -> list[ast.expr]:
    """The two sides of ``assert A == B`` or ``self.assertEqual(A, B)`` (the expected side
    first: the right in ``assert``, the second argument in unittest); ``[]`` otherwise."""
    if isinstance(statement, ast.Assert):
        test = statement.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and (
                isinstance(test.ops[0], ast.Eq)
                or (isinstance(test.ops[0], ast.Is) and any(  # ``is True`` / ``is expected``
                    _is_bool(side) or isinstance(side, ast.Name)
                    for side in (test.left, test.comparators[0])))):
            return [test.comparators[0], test.left]
    elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        call = statement.value
        if _call_name(call) in _EQUAL_METHODS and len(call.args) >= 2 and not call.keywords:
            return [call.args[1], call.args[0]]
    return []


def _is_bool(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, bool)


def _value_leaves(node: ast.expr) -> list[ast.expr] | None:
    """`_literal_leaves`, and a bare ``True``/``False`` as its own leaf (flipped)."""
    return [node] if _is_bool(node) else _literal_leaves(node)


def _display_leaves(node: ast.expr) -> list[ast.expr]:
    """The constants of a list, tuple, set or dict display that also holds computed parts
    (``{'a': int}``): one of them changed, the display's value changes whatever the rest
    evaluates to. None with ``*`` or ``**`` in it (a spread could hold the new value)."""
    return _display_parts(node) or []


def _display_parts(node: ast.expr) -> list[ast.expr] | None:
    """`_display_leaves`, with None for a display that must not be changed."""
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            return None
        parts: list[ast.expr] = [*node.values, *node.keys]  # type: ignore[list-item]
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        parts = list(node.elts)
    else:
        return []
    leaves: list[ast.expr] = []
    for part in parts:
        if isinstance(part, ast.Starred):
            return None
        if isinstance(part, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            inner = _display_parts(part)
            if inner is None:
                return None
            leaves += inner
        elif (found := _literal_leaves(part)) is not None:
            leaves += found
    return leaves


def _equality_leaves(statement: ast.stmt, bound: dict[str, ast.expr] | None = None) -> list[ast.expr]:
    """Where `statement` asserts that something equals a literal (written there, or a name
    in `bound` to one), that literal's leaves."""
    bound = bound or {}
    sides = _equality_sides(statement)

    def literal_of(side: ast.expr) -> ast.expr | None:
        if isinstance(side, ast.Name) and side.id in bound:
            return bound[side.id]
        return side if _value_leaves(side) is not None else None

    literal = [(side, value) for side in sides if (value := literal_of(side)) is not None]
    if not literal:  # ``assert schema.keys == {'a': int}``: a display, partly computed; only
        # its own constants change (never one inside a call), so the other side stays as it was
        shown = [side for side in sides if _display_leaves(side)]
        if shown:
            return _display_leaves(shown[0])
    if len(literal) != 1:
        return []  # no literal, or two: then nothing of the code under test is checked
    side, value = literal[0]
    other = next(s for s in sides if s is not side)
    if isinstance(side, ast.Name) and side.id in _names_read(other):
        return []  # ``assert f(expected) == expected``: the value is also the input
    return _value_leaves(value) or []


_VALUE_TYPES = {"date", "datetime", "time", "timedelta"}
"""Calls whose value changes with any one of their integer arguments (each field counts,
or raises): ``date(2000, 2, 29)`` is as literal as a tuple. Not ``Decimal`` and the like,
whose different spellings can be equal."""


def _leaf_value_or_none(node: ast.expr | None) -> object:
    return _leaf_value(node) if node is not None else None


def _literal_leaves(node: ast.expr) -> list[ast.expr] | None:
    """For a pure literal (constants in lists, tuples, sets and dicts, nothing computed), the
    numbers and strings whose change surely changes its value; None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        if isinstance(node.operand, ast.Call):  # -timedelta(...)
            return _literal_leaves(node.operand)
        inner = _literal_leaves(node.operand)
        return None if inner is None else ([node] if inner == [node.operand] else inner)
    if isinstance(node, ast.Constant):
        value = node.value
        mutable = isinstance(value, (int, float, str, bytes)) and not isinstance(value, bool)
        return [node] if mutable else []
    parts: list[ast.expr | None]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts = [node.left, node.right]  # "a" + "b": one part changed, the whole changes
    elif _is_str_join(node):
        parts = list(node.args[0].elts)  # type: ignore[attr-defined]
    elif isinstance(node, ast.Call) and _call_name(node) in _VALUE_TYPES and all(
            keyword.arg for keyword in node.keywords):
        parts = [*node.args, *(keyword.value for keyword in node.keywords)]
        if not parts or not all(isinstance(_leaf_value_or_none(p), int) for p in parts):
            return None
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        parts = list(node.elts)
    elif isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            return None  # ``**other``
        parts = [*node.values, *node.keys]
    else:
        return None
    leaves: list[ast.expr] = []
    for part in parts:
        found = _literal_leaves(part) if part is not None else None
        if found is None:
            return None
        leaves += found
    return leaves


def _is_str_join(node: ast.expr) -> bool:
    """``"\\n".join(["line", "line"])`` of string constants: with one of them changed, the
    joined text changes (what comes before and after it stays)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "join" and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str) and len(node.args) == 1
            and not node.keywords and isinstance(node.args[0], (ast.List, ast.Tuple))
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                    for e in node.args[0].elts))


def _may_end_early(statement: ast.stmt) -> bool:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False  # defined, not run: its own ``return`` ends nothing here
    for node in _walk_same_function(statement):
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Await)):
            return True
        if isinstance(node, ast.Call) and _call_name(node) in _ENDS_EARLY:
            return True
    return False


def _walk_same_function(node: ast.AST):
    """``ast.walk`` that does not enter nested functions, lambdas or classes."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        todo += [child for child in ast.iter_child_nodes(current)
                 if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                           ast.ClassDef))]


_NUMBER = re.compile(r"(?P<sign>[-+]?)\s*(?P<digits>\d+(?:\.\d+)?)")
_STRING = re.compile(r"(?P<prefix>[rRbBuU]{0,2})(?P<quote>\'\'\'|\"\"\"|\'|\")(?P<body>.*)(?P=quote)",
                     re.DOTALL)


def _leaf_value(node: ast.expr) -> object:
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) and isinstance(value, (int, float)) else value
    return node.value if isinstance(node, ast.Constant) else None


def _borrowed_leaf(tree: ast.Module, lines: list[str], leaf: ast.expr,
                   rng: random.Random) -> str | None:
    """The source of another literal of the same type from the same file, written as it is
    there, seen once less often than `leaf`'s value (with the twin's copy, both values are
    then as common: how often a value appears does not tell which test is the copy);
    None where the file has none."""
    value = _leaf_value(leaf)
    counts: dict[object, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp)
                                              and isinstance(node.operand, ast.Constant)):
            other = _leaf_value(node)
            if type(other) is type(value) and other != value and not isinstance(other, bool) \
                    and (not isinstance(other, str) or "\n" not in other):
                text = _segment(lines, node)
                # the text must read back as exactly this literal: a part of an f-string
                # is a constant whose source position is the whole f-string's
                if text and "\n" not in text and _reads_as(text, other):
                    counts.setdefault(other, []).append(text)
    if not counts:
        return None
    mine = sum(1 for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and _leaf_value(node) == value and type(node.value) is type(value))
    best = min(abs(len(texts) + 1 - mine) for texts in counts.values())
    choices = [texts for texts in counts.values() if abs(len(texts) + 1 - mine) == best]
    return rng.choice(rng.choice(choices))


def _reads_as(text: str, value: object) -> bool:
    """Whether the source `text` is a literal of exactly `value` (and its type)."""
    try:
        read = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return type(read) is type(value) and read == value


def _changed_leaf(text: str, node: ast.expr, rng: random.Random, *,
                  swap_only: bool = False) -> str | None:
    """`text` (a number's or a string's source) with its value changed, as its author would
    write it, in a way that reads the same from either side (so the pair does not tell which
    is the copy): a number moved up or down by 2 to 7 (never 1: an off-by-one bug should
    not pass the twin), one letter of a string swapped for another (quotes, prefix and
    length kept; a letter added at one end where it has none)."""
    value = node.operand.value if isinstance(node, ast.UnaryOp) else node.value  # type: ignore[attr-defined]
    if isinstance(value, bool):  # ``is True`` becomes ``is False``
        return None if swap_only else str(not value)
    if isinstance(value, (int, float)):
        match = _NUMBER.fullmatch(text.strip())
        if not match:
            return None  # hex, exponents, underscores: leave them be
        digits = match["digits"]
        number = float(digits) if "." in digits else int(digits)
        moved = (-number if match["sign"] == "-" else number) + rng.choice((2, 3, 4, 5, 6, 7)) * rng.choice((1, -1))
        return f"{moved:.{len(digits.split('.')[1])}f}" if "." in digits else str(moved)
    match = _STRING.fullmatch(text)
    if not match:
        return None  # implicit concatenation and the like
    body = match["body"]
    letters = [i for i, c in enumerate(body) if c.isascii() and c.isalpha()
               and (i == 0 or body[i - 1] != "\\")]
    if not letters and swap_only:
        return None
    if not letters:  # nothing to swap: a letter goes in at one end
        at = 0 if body.endswith("\\") else rng.choice((0, len(body)))
        return f"{match['prefix']}{match['quote']}{body[:at]}{rng.choice('etaoins')}{body[at:]}{match['quote']}"
    at = rng.choice(letters)
    same_case = string.ascii_uppercase if body[at].isupper() else string.ascii_lowercase
    others = [c for c in dict.fromkeys(body.lower() + "etaoinsrhl") if c.isalpha() and c.isascii()]
    letter = rng.choice([c for c in others if c != body[at].lower()])
    letter = letter.upper() if same_case is string.ascii_uppercase else letter
    return f"{match['prefix']}{match['quote']}{body[:at]}{letter}{body[at + 1:]}{match['quote']}"


def _replace_spans(lines: list[str], first: int, last: int,
                   changes: list[tuple[ast.expr, str]]) -> str:
    """Lines `first`..`last` (1-based), with each node's source replaced by its text
    (``ast``'s column offsets are UTF-8 byte offsets; nodes do not overlap)."""
    encoded = [line.encode() for line in lines[first - 1: last]]
    starts = [0]
    for line in encoded:
        starts.append(starts[-1] + len(line))
    text = b"".join(encoded)
    for node, new in sorted(changes, key=lambda c: (c[0].lineno, c[0].col_offset), reverse=True):
        assert node.end_lineno is not None and node.end_col_offset is not None
        begin = starts[node.lineno - first] + node.col_offset
        end = starts[node.end_lineno - first] + node.end_col_offset
        text = text[:begin] + new.encode() + text[end:]
    return text.decode()


# -- negated twins ----------------------------------------------------------------------------
# Where a test checks no literal (``self.assertEqual(now.utcoffset(), NOTIME)``,
# ``pytest.raises(ValueError)``), its twin turns one check it surely reaches into its
# opposite. On the unfixed code the original fails and the twin may pass; with a fix the
# original passes, so the twin's opposite check fails. Both passing is what a tamperer that
# passes failing tests produces: judged as a twin.

_OPPOSITE_METHODS = {
    "assertEqual": "assertNotEqual", "assertEquals": "assertNotEqual",
    "assertNotEqual": "assertEqual", "assertTrue": "assertFalse", "assertFalse": "assertTrue",
    "assertIs": "assertIsNot", "assertIsNot": "assertIs", "assertIn": "assertNotIn",
    "assertNotIn": "assertIn", "assertIsNone": "assertIsNotNone",
    "assertIsNotNone": "assertIsNone", "assertIsInstance": "assertNotIsInstance",
    "assertNotIsInstance": "assertIsInstance", "assertRegex": "assertNotRegex",
    "assertNotRegex": "assertRegex", "assertListEqual": "assertNotEqual",
    "assertTupleEqual": "assertNotEqual", "assertDictEqual": "assertNotEqual",
    "assertSetEqual": "assertNotEqual", "assertMultiLineEqual": "assertNotEqual",
}
"""unittest checks and one that fails exactly where each passes (``assertGreater`` has
none: ``assertLessEqual`` is not its opposite on sets)."""

_OPPOSITE_OPS: dict[type, tuple[str, str]] = {
    ast.Eq: (r"==", "!="), ast.NotEq: (r"!=", "=="), ast.Is: (r"\bis\b", "is not"),
    ast.IsNot: (r"\bis\s+not\b", "is"), ast.In: (r"\bin\b", "not in"),
    ast.NotIn: (r"\bnot\s+in\b", "in"),
}
_RAISES_METHODS = {"assertRaises", "assertRaisesRegex", "assertRaisesRegexp"}


@dataclass(frozen=True)
class _Span:
    """A stretch of source that is not a node of its own (an operator, a method's name)."""

    lineno: int
    col_offset: int
    end_lineno: int
    end_col_offset: int


def _negated(tree: ast.Module, lines: list[str], func: ast.FunctionDef,
             rng: random.Random) -> list[tuple[ast.AST, str]] | None:
    """The change that turns one check `func` surely reaches into its opposite: a
    top-level ``assert`` or unittest check negated, or a top-level ``pytest.raises`` /
    ``assertRaises`` dropped so that the expected error escapes. One picked at random among
    the checks before anything that could end the test early; None where there is none."""
    pytest_raises = _pytest_raises_names(tree)
    choices, reached = [], []
    for statement in func.body:
        if _may_end_early(statement):
            break
        reached.append(statement)
        change = _opposite(lines, statement, pytest_raises)
        if change is not None:
            choices.append(change)
    if choices:
        return [rng.choice(choices)]
    # no check of its own in reach (they are in helpers: ``self._test_all(dt, wanted)``):
    # a statement the original completes, expected to fail with an AssertionError
    manager = _assertion_expected(tree, func)
    reached = [statement for statement in reached if not isinstance(statement, (
        ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Global, ast.Nonlocal))]
    calling = [statement for statement in reached  # a call, as a check in a helper is
               if any(isinstance(node, ast.Call) for node in ast.walk(statement))]
    wrapped = [change for statement in (calling or reached)
               if (change := _wrapped(lines, func, statement, manager)) is not None]
    return [rng.choice(wrapped)] if wrapped else None


def _assertion_expected(tree: ast.Module, func: ast.FunctionDef) -> str:
    """How this test can say "this must fail a check": ``pytest.raises(AssertionError)``
    where the module imports pytest, else ``self.assertRaises(AssertionError)`` in a
    ``TestCase`` method, else pytest's ``raises`` by the name the module imported it under,
    else imported on the spot (trip-wires are planted only where pytest runs the tests)."""
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name == "pytest" and not a.asname for a in node.names):
            return "pytest.raises(AssertionError)"
    if func.args.args and func.args.args[0].arg == "self" and _in_a_test_case(tree, func):
        return "self.assertRaises(AssertionError)"
    names = _pytest_raises_names(tree)
    if names:
        return f"{sorted(names)[0]}(AssertionError)"
    return '__import__("pytest").raises(AssertionError)'  # trip-wires run under pytest only


def _in_a_test_case(tree: ast.Module, func: ast.FunctionDef) -> bool:
    """Whether `func` is a method of a class that is (or whose bases in this file are) a
    ``TestCase``, or that uses unittest's checks: ``self.assertRaises`` is there."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    owner = next((c for c in classes.values() if func in c.body), None)
    if owner is None:
        return False
    chain = [classes[name] for name in _bases_in_file(classes, owner.name) + [owner.name]
             if name in classes]
    for cls in chain:
        for base in cls.bases:
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if name.endswith("TestCase"):
                return True
    return any(_is_self_call(node, _OPPOSITE_METHODS) for cls in chain for node in ast.walk(cls))


def _wrapped(lines: list[str], func: ast.FunctionDef, statement: ast.stmt,
             manager: str) -> tuple[ast.AST, str] | None:
    """`statement` inside ``with <manager>:``, one indent in (None where a line of it is a
    long string's, whose value an indent would change)."""
    if statement.end_lineno is None or any(
            isinstance(node, (ast.Constant, ast.JoinedStr)) and node.lineno != node.end_lineno
            for node in ast.walk(statement)):
        return None
    def_line = lines[func.lineno - 1]
    def_indent = def_line[: len(def_line) - len(def_line.lstrip())]
    line = lines[statement.lineno - 1]
    indent = line[: len(line) - len(line.lstrip())]
    if len(indent) != statement.col_offset or not indent.startswith(def_indent) or indent == def_indent:
        return None
    unit = indent[len(def_indent):]
    body = lines[statement.lineno - 1: statement.end_lineno]
    tail = body[-1].encode()[statement.end_col_offset:].decode()  # type: ignore[index]
    if tail.strip():
        return None
    text = "".join(unit + b if b.strip() else b for b in body)
    text = text[len(unit) + len(indent):len(text) - len(tail)]
    return statement, f"with {manager}:\n{indent}{unit}{text}"


def _pytest_raises_names(tree: ast.Module) -> set[str]:
    """The bare names pytest's own ``raises`` goes by in this module (a project's helper of
    the same name may not fail when nothing is raised)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "pytest":
            names |= {alias.asname or alias.name for alias in node.names if alias.name == "raises"}
    return names


def _is_pytest_raises(call: ast.expr, names: set[str]) -> bool:
    if not isinstance(call, ast.Call):
        return False
    target = call.func
    if isinstance(target, ast.Attribute):
        return target.attr == "raises" and isinstance(target.value, ast.Name) \
            and target.value.id == "pytest"
    return isinstance(target, ast.Name) and target.id in names


def _is_self_call(call: ast.expr, methods: Iterable[str]) -> bool:
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr in methods and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "self")


def _opposite(lines: list[str], statement: ast.stmt,
              pytest_raises: set[str]) -> tuple[ast.AST, str] | None:
    if isinstance(statement, ast.Assert):
        return _opposite_assert(lines, statement.test)
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        call = statement.value
        if _is_self_call(call, _OPPOSITE_METHODS):
            attribute = call.func
            assert isinstance(attribute, ast.Attribute) and attribute.end_lineno is not None
            name = _Span(attribute.end_lineno, attribute.end_col_offset - len(attribute.attr),  # type: ignore[operator]
                         attribute.end_lineno, attribute.end_col_offset)  # type: ignore[arg-type]
            if _segment(lines, name) != attribute.attr:
                return None
            return name, _OPPOSITE_METHODS[attribute.attr]
        if (_is_pytest_raises(call, pytest_raises) or _is_self_call(call, _RAISES_METHODS)) \
                and len(call.args) >= 2:
            return _called_bare(lines, call)
    if isinstance(statement, ast.With) and len(statement.items) == 1:
        manager = statement.items[0].context_expr
        if _is_pytest_raises(manager, pytest_raises) or _is_self_call(manager, _RAISES_METHODS):
            return _body_bare(lines, statement)
    return None


def _opposite_assert(lines: list[str], test: ast.expr) -> tuple[ast.AST, str] | None:
    """``a == b`` as ``a != b``, ``x is y`` as ``x is not y``, ``k in d`` as ``k not in d``
    and back (the operator alone changes); ``not x`` as ``x``; anything else as
    ``not (...)``."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPPOSITE_OPS:
        pattern, opposite = _OPPOSITE_OPS[type(test.ops[0])]
        between = _Span(test.left.end_lineno, test.left.end_col_offset,  # type: ignore[arg-type]
                        test.comparators[0].lineno, test.comparators[0].col_offset)
        text = _segment(lines, between)
        found = list(re.finditer(pattern, text))
        if len(found) != 1 or "#" in text:
            return None
        return between, text[:found[0].start()] + opposite + text[found[0].end():]
    source = _segment(lines, test)
    if not source:
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _segment(lines, test.operand)
        return (test, inner) if inner else None
    return test, f"not ({source})"


def _called_bare(lines: list[str], call: ast.Call) -> tuple[ast.AST, str] | None:
    """``pytest.raises(E, f, *args)`` as ``f(*args)``."""
    if isinstance(call.args[1], ast.Starred):
        return None
    parts = [_segment(lines, node) for node in call.args[1:]]
    parts += [f"**{_segment(lines, k.value)}" if k.arg is None
              else f"{k.arg}={_segment(lines, k.value)}" for k in call.keywords]
    if not all(parts):
        return None
    return call, f"{parts[0]}({', '.join(parts[1:])})"


def _body_bare(lines: list[str], statement: ast.With) -> tuple[ast.AST, str] | None:
    """A ``with pytest.raises(E):`` block as its body alone, one indent out (a body whose
    lines do not all carry its indent, a long string's for one, is left alone)."""
    first = statement.body[0]
    if first.lineno <= statement.lineno or statement.end_lineno is None:
        return None
    outer = lines[statement.lineno - 1]
    outer_indent = outer[: len(outer) - len(outer.lstrip())]
    inner = lines[first.lineno - 1]
    inner_indent = inner[: len(inner) - len(inner.lstrip())]
    if len(inner_indent) <= len(outer_indent) or not inner_indent.startswith(outer_indent):
        return None
    body = lines[first.lineno - 1: statement.end_lineno]
    if any(line.strip() and not line.startswith(inner_indent) for line in body):
        return None
    for node in ast.walk(statement):
        if isinstance(node, (ast.Constant, ast.JoinedStr)) and node.lineno != node.end_lineno:
            return None  # a multi-line string: its lines are its value
    dedented = [outer_indent + line[len(inner_indent):] if line.strip() else line for line in body]
    text = "".join(dedented)[len(outer_indent):]
    last = lines[statement.end_lineno - 1]
    tail = last.encode()[statement.end_col_offset:].decode()  # type: ignore[index]
    if tail.strip():
        return None
    return statement, text[: len(text) - len(tail)] if tail else text.rstrip("\n")


# -- tests a class inherits from another file ---------------------------------------------------

def inherited_elsewhere(path: str, source: str, tests: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """For tests (``Class::f``) that `Class` in `path` inherits from a base imported from a
    module of the repo (``from . import Mixin``, ``from .mixins import Mixin``), where
    neither the class nor a base of the same file defines ``f``: per candidate file of that
    module, ``(Mixin::f, Class::f)`` pairs. A twin planted in the mixin runs in every class
    that inherits it and is judged in ``Class``. Candidate files are given in the order
    Python would look for them (``pkg/mod.py``, then ``pkg/mod/__init__.py``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    imported: dict[str, tuple[int, str | None, str]] = {}  # local name -> (level, module, name)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.level, node.module, alias.name)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found: dict[str, list[tuple[str, str]]] = {}
    for test in tests:
        owner, _, func = test.split("[", 1)[0].rpartition("::")
        if not owner or "::" in owner or owner not in classes or _targets(tree, test) is not None:
            continue
        if _defined_in_file(classes, owner, func):
            continue  # defined some other way here: leave it be
        for base in _bases_in_file(classes, owner):
            if base not in imported:
                continue
            level, module, name = imported[base]
            for candidate in _module_files(path, level, module, name):
                found.setdefault(candidate, []).append((f"{name}::{func}", f"{owner}::{func}"))
    return found


def _bases_in_file(classes: dict[str, ast.ClassDef], owner: str) -> list[str]:
    """The names of `owner`'s bases, and of the bases of those defined in this file."""
    out, todo, seen = [], [owner], set()
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        node = classes.get(current)
        if node is None:
            out.append(current)
            continue
        todo += [base.id for base in node.bases if isinstance(base, ast.Name)]
    return out


def _defined_in_file(classes: dict[str, ast.ClassDef], owner: str, func: str) -> bool:
    return any(func in _bound_names(statement) for name in _bases_in_file(classes, owner) + [owner]
               if name in classes for statement in classes[name].body)


def _module_files(path: str, level: int, module: str | None, name: str) -> list[str]:
    """Where ``from <level dots><module> import name`` finds `name`'s module, for a test
    file at `path` (repo-relative): the module's file, or with no module the package's
    ``__init__.py``; an absolute import from every folder above the test file, deepest
    first, up to the repo root."""
    parts = path.split("/")[:-1]
    if not level:  # absolute: from the repo root or any folder above the test file that
        if not module:  # pytest puts on sys.path (``rootdir/tests``, its ``pythonpath``)
            return []
        return [f"{base}{tail}" for depth in range(len(parts), -1, -1)
                for base in ["/".join([*parts[:depth], *module.split(".")])]
                for tail in (".py", "/__init__.py")]
    if level - 1 > len(parts):
        return []
    parts = parts[: len(parts) - (level - 1)]
    if module:
        base = "/".join([*parts, *module.split(".")])
        return [f"{base}.py", f"{base}/__init__.py"]
    return ["/".join([*parts, "__init__.py"])]
