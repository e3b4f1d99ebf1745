"""A reproduction from a failing test: the code a user would run to see the bug.

From the hidden test file (source text) and, when known, the line where the test failed,
`failing_check` takes the test's body up to the failing check, turns unittest/nose
assertions into plain ``assert`` lines, binds a parametrized case's values by its id, and
collects the module-level helpers and library imports the snippet uses. `check_from_log`
does the same from pytest's long traceback when the test's source is not in the hidden file
(a test inherited from a visible mixin). Pure functions of text; `statements` renders them.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

__all__ = ["FailingCheck", "check_from_log", "failing_check", "failing_line"]

_MAX_SETUP_LINES = 30


@dataclass
class FailingCheck:
    """One failing check of a test: the code that leads to it, and the check itself."""

    setup: list[str]
    check: str
    subject: str | None
    imports: list[str]


_UNITTEST = {
    "assertEqual": "{0} == {1}", "assertEquals": "{0} == {1}", "assertNotEqual": "{0} != {1}",
    "assertTrue": "{0}", "assertFalse": "not {0}", "assertIs": "{0} is {1}",
    "assertIsNot": "{0} is not {1}", "assertIsNone": "{0} is None",
    "assertIsNotNone": "{0} is not None", "assertIn": "{0} in {1}", "assertNotIn": "{0} not in {1}",
    "assertIsInstance": "isinstance({0}, {1})", "assertGreater": "{0} > {1}",
    "assertLess": "{0} < {1}", "assertGreaterEqual": "{0} >= {1}", "assertLessEqual": "{0} <= {1}",
    "assertAlmostEqual": "round({0} - {1}, 7) == 0", "assertCountEqual": "sorted({0}) == sorted({1})",
    "assertListEqual": "{0} == {1}", "assertDictEqual": "{0} == {1}", "assertTupleEqual": "{0} == {1}",
    "assertSetEqual": "{0} == {1}", "assertSequenceEqual": "list({0}) == list({1})",
    "assertMultiLineEqual": "{0} == {1}",
}
_NOT_A_SUBJECT = {"len", "list", "str", "repr", "set", "dict", "tuple", "sorted", "isinstance",
                  "type", "int", "float", "bool", "round", "print", "getattr", "hasattr", "iter",
                  "next", "range", "frozenset", "bytes", "all", "any", "min", "max", "sum"}


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or ""


def _as_assert(source: str, stmt: ast.stmt) -> str | None:
    """A unittest/pytest check as a plain ``assert`` line (None: not a check)."""
    if isinstance(stmt, ast.Assert):
        return f"assert {_segment(source, stmt.test)}"
    call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
    if call is None or not isinstance(call.func, (ast.Attribute, ast.Name)):
        return None
    name = call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id
    if name.startswith("assert_"):  # nose-style helpers: assert_equal(a, b)
        name = "assert" + "".join(part.title() for part in name.split("_")[1:])
    args = [" ".join(_segment(source, a).split()) for a in call.args]
    if name in _UNITTEST:
        template = _UNITTEST[name]
        needed = template.count("{1}") and 2 or 1
        if len(args) < needed:
            return None
        return "assert " + template.format(*args[:needed])
    if name == "assertRaises" and len(args) >= 2:
        return f"{args[1]}({', '.join(args[2:])})  # should raise {args[0]}"
    return None


def _is_check(source: str, stmt: ast.stmt) -> bool:
    """A check, or a block (loop, ``with``) that holds one."""
    for node in ast.walk(stmt):
        if isinstance(node, ast.stmt) and _as_assert(source, node) is not None:
            return True
        if isinstance(node, ast.With) and any(
                "raises" in _segment(source, item.context_expr).split("(")[0].lower()
                for item in node.items):
            return True
    return False


def _subject(node: ast.AST, local: set[str]) -> str | None:
    """The library call a check is about: the first call that is not a builtin, a helper
    of the test module (`local`) or of the test case (``self.x``)."""
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        func = sub.func
        if isinstance(func, ast.Name) and func.id not in _NOT_A_SUBJECT and func.id not in local \
                and not func.id.startswith("assert"):
            return f"{func.id}()"
        if isinstance(func, ast.Attribute) and not func.attr.startswith("assert") and not (
                isinstance(func.value, ast.Name) and func.value.id in ("self", "pytest", *local)):
            return f".{func.attr}()" if not isinstance(func.value, ast.Name) else f"{func.value.id}.{func.attr}()"
    return None


def _find_test(tree: ast.Module, test_id: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The test's function: at module level, in its class, or inherited from a base class
    defined in the same module."""
    parts = [p.split("[")[0] for p in test_id.split("::")[1:]]
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def in_class(cls: ast.ClassDef, name: str, depth: int = 0) -> ast.FunctionDef | None:
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return node  # type: ignore[return-value]
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes and depth < 8:
                found = in_class(classes[base.id], name, depth + 1)
                if found is not None:
                    return found
        return None

    if len(parts) == 1:
        return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == parts[0]), None)
    cls = classes.get(parts[0])
    for part in parts[1:-1]:  # nested classes
        cls = next((n for n in cls.body if isinstance(n, ast.ClassDef) and n.name == part), None) \
            if cls is not None else None
    return in_class(cls, parts[-1]) if cls is not None else None


def _is_test_module(dotted: str) -> bool:
    """``tests``, ``test_x``, ``pkg.tests.helpers``, ``x_test``; not ``pytest``."""
    return any(part.startswith("test") or part.endswith(("_test", "tests"))
               for part in dotted.split("."))


def _used_imports(tree: ast.Module, source: str, code: str) -> list[str]:
    """The test module's top-level imports of library names that `code` uses (never an
    import of another test module, which would point at the hidden files)."""
    used = set(re.findall(r"(?<![.\w])[A-Za-z_]\w*", code))  # names, not attributes
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level or _is_test_module(node.module or "")):
            continue
        if isinstance(node, ast.Import) and any(_is_test_module(a.name) for a in node.names):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            # only the names the snippet uses, on one line
            aliases = [a for a in node.names if a.name == "*"
                       or (a.asname or a.name.split(".")[0]) in used]
            if not aliases:
                continue
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)
            lines.append(f"from {node.module} import {names}" if isinstance(node, ast.ImportFrom)
                         else f"import {names}")
    return lines


def failing_check(source: str, tree: ast.Module, test_id: str, line: int | None, *,
                   last: bool = False) -> FailingCheck | None:
    """The check of test `test_id` that failed: the statement holding `line`, else the
    test's first check (its `last` when the body ends at the failing line)."""
    test = _find_test(tree, test_id)
    if test is None:
        return None
    body = test.body[1:] if test.body and isinstance(test.body[0], ast.Expr) and isinstance(
        getattr(test.body[0], "value", None), ast.Constant) else test.body
    target = None
    if line is not None:
        target = next((s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
    if target is None:
        checks = [s for s in body if _is_check(source, s)]
        target = (checks[-1] if last else checks[0]) if checks else None
    if target is None:
        return None
    before = body[:body.index(target)]
    setup = [_as_assert(source, s) or textwrap.dedent(_segment_lines(source, s)) for s in before]
    setup_lines = "\n".join(setup).splitlines()
    if len(setup_lines) > _MAX_SETUP_LINES:
        setup_lines = []
    check = _as_assert(source, target) or textwrap.dedent(_segment_lines(source, target))
    helpers = _helpers(tree, source, "\n".join(setup_lines + [check]))
    code = "\n".join(helpers + setup_lines + [check])
    local = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} \
        | {a.arg for a in test.args.args}  # a parametrized callable is not the library's API
    subject = next(filter(None, (_subject(n, local) for n in [target, *reversed(before)])), None)
    params = _parameters(source, test, test_id, tree)
    return FailingCheck(params + helpers + setup_lines, check, subject,
                  _used_imports(tree, source, code + "\n" + "\n".join(params)))


def _parameters(source: str, test: ast.AST, test_id: str, tree: ast.Module | None = None) -> list[str]:
    """``a, b = 1, 2``: the values of a parametrized test's case, matched by its id (the
    cases may be written in the decorator or in a module-level list it names)."""
    wanted = test_id.split("[", 1)[1].rstrip("]") if "[" in test_id else None
    if wanted is None:
        return []
    constants = {n.targets[0].id: n.value for n in (tree.body if tree else [])
                 if isinstance(n, ast.Assign) and len(n.targets) == 1
                 and isinstance(n.targets[0], ast.Name)}
    for decorator in getattr(test, "decorator_list", []):
        if not (isinstance(decorator, ast.Call) and _segment(source, decorator.func).endswith("parametrize")
                and len(decorator.args) >= 2):
            continue
        names, cases = decorator.args[0], decorator.args[1]
        if isinstance(cases, ast.Name):
            cases = constants.get(cases.id, cases)
        if not isinstance(cases, (ast.List, ast.Tuple)):
            continue
        if isinstance(names, ast.Constant) and isinstance(names.value, str):
            argnames = [n.strip() for n in names.value.split(",") if n.strip()]
        elif isinstance(names, (ast.List, ast.Tuple)) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in names.elts):
            argnames = [e.value for e in names.elts]
        else:
            continue
        matches = []
        for case in cases.elts:
            values = case.elts if isinstance(case, (ast.Tuple, ast.List)) and len(argnames) > 1 else [case]
            try:
                literal = [ast.literal_eval(v) for v in values]
            except ValueError:
                continue
            case_id = "-".join(str(v) for v in literal)
            # the grader's names are cut at the first space: an exact id first, else a prefix
            if len(literal) == len(argnames) and case_id.startswith(wanted):
                texts = [_segment(source, v) for v in values]
                matches.append((case_id != wanted, f"{', '.join(argnames)} = {', '.join(texts)}"))
        if matches:
            return [min(matches)[1], ""]
    return []


def _helpers(tree: ast.Module, source: str, code: str, budget: int = 30) -> list[str]:
    """Short module-level helpers of the test module that `code` uses (a class ``Timer``, a
    function ``_strip``), so the reproduction runs as it stands; never a test itself."""
    defs: dict[str, ast.AST] = {
        n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
        and not n.name.lower().startswith("test") and not n.name.lower().endswith("test")}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            defs.setdefault(node.targets[0].id, node)
    chosen: list[ast.AST] = []
    pending = code
    for _ in range(2):  # the helpers' own helpers, one level down
        used = set(re.findall(r"[A-Za-z_]\w*", pending))
        fresh = [n for name, n in defs.items() if name in used and n not in chosen]
        if not fresh:
            break
        chosen += fresh
        pending = "\n".join(_segment_lines(source, n) for n in fresh)
    lines: list[str] = []
    for node in sorted(chosen, key=lambda n: n.lineno):
        start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        text = "\n".join(source.splitlines()[start - 1:node.end_lineno]).splitlines()
        if len(lines) + len(text) > budget:
            continue
        lines += text + [""]
    return lines


def _segment_lines(source: str, node: ast.AST) -> str:
    lines = source.splitlines()
    return "\n".join(lines[node.lineno - 1:node.end_lineno])


def failing_line(section: str, path: str, name: str) -> int | None:
    """The test file's line where the test failed: the first location of the hidden file in
    its traceback section (``path:N: in test_x`` with ``--tb=short``, ``path:N: Error`` with
    the long format; the test's own frame comes first)."""
    match = re.search(rf"^{re.escape(path)}:(\d+):", section, re.MULTILINE)
    return int(match.group(1)) if match else None


def check_from_log(section: str, name: str) -> FailingCheck | None:
    """The failing check of a test whose source is not in the hidden file (inherited from a
    visible mixin): pytest's long traceback shows the function up to the failing line
    (``>``); that excerpt is the test body."""
    lines = section.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"^    (async )?def {re.escape(name)}\(", line)), None)
    if start is None:
        return None
    body = []
    for line in lines[start:]:
        if line.startswith("E ") or not line.startswith(("    ", ">   ")) and line.strip():
            break
        body.append(line[4:] if len(line) >= 4 else "")
    source = "\n".join(body) + "\n"
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = failing_check(source, tree, f"x::{name}", None, last=True)
    if found is not None:
        found.imports = []  # the module the function came from is not known here
    return found
