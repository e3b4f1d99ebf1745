"""Problem statements a user could have written, and the check that they give nothing away.

A statement describes the *symptom*, with a reproduction built from what the failing test
does (its inputs and the value it expects), the way a user reports a bug. It never names a
hidden test, the hidden test file, or a line of the fix: the agent must find the bug from
behaviour, as in a real issue. `check_statement` is the one rule for that, used by the forge
(for deterministic and model-written statements alike) and by the tests over the shipped suite.

`write_statement` is the deterministic writer (no model): from the hidden test file (in the
task's ``test_patch``) it takes the failing test's body up to the check that failed (known from
the pytest log when there is one, else the test's first check), turns unittest assertions into
plain ``assert`` lines, and adds the imports the snippet uses. From the log it keeps only the
exception *type* (never a repr, never an assertion diff).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

__all__ = [
    "check_statement",
    "changed_lines",
    "failure_messages",
    "hidden_files",
    "new_files",
    "write_statement",
]

_SECTION = re.compile(r"^_{3,} (?P<title>.+?) _{3,}$", re.MULTILINE)
_FAILURES = re.compile(r"^=+ (FAILURES|ERRORS) =+$", re.MULTILINE)
_END = re.compile(r"^=+ (short test summary info|warnings summary|.* in [\d.]+s.*) =+$", re.MULTILINE)
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?P<name>[A-Za-z_]\w*(?:Error|Exception|Warning|Exit|Interrupt|Iteration))\b")
_MAX_SETUP_LINES = 30
# a gold line shorter than this (``pass``, ``else:``, ``return x``) says nothing about the fix
_MIN_CHANGED = 10


def failure_messages(output: str) -> dict[str, list[str]]:
    """{section title (``test_x[param]`` or ``TestClass.test_x``): its ``E`` lines}."""
    return {title: lines for title, (lines, _) in _failure_sections(output).items()}


def _failure_sections(output: str) -> dict[str, tuple[list[str], str]]:
    """{section title: (its distinct ``E`` lines, the section's text)} of a pytest log."""
    found = _FAILURES.search(output)
    if not found:
        return {}
    body = output[found.end():]
    end = _END.search(body)
    body = body[:end.start()] if end else body
    sections = list(_SECTION.finditer(body))
    out: dict[str, tuple[list[str], str]] = {}
    for index, section in enumerate(sections):
        stop = sections[index + 1].start() if index + 1 < len(sections) else len(body)
        text = body[section.end():stop]
        lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
        # a chained exception repeats its E lines; each distinct line is said once
        out.setdefault(section.group("title"), (list(dict.fromkeys(l for l in lines if l))[:8], text))
    return out


# --- what a task hides ----------------------------------------------------------------------


def new_files(patch: str) -> dict[str, str]:
    """{path: content} of the files a git diff creates (a task's test_patch re-creates the
    hidden test files this way)."""
    files: dict[str, str] = {}
    for chunk in re.split(r"^diff --git ", patch, flags=re.MULTILINE)[1:]:
        head = re.search(r"^\+\+\+ b/(.+)$", chunk, re.MULTILINE)
        if not head or "\n--- /dev/null" not in chunk:
            continue
        body = chunk[head.end():].split("\n")
        lines = [line[1:] for line in body if line.startswith("+")]
        files[head.group(1)] = "\n".join(lines) + "\n"
    return files


def hidden_files(fail_to_pass: list[str], test_patch: str = "") -> list[str]:
    """The hidden test files: those of the FAIL_TO_PASS ids and those the test patch adds."""
    return sorted({t.split("::")[0] for t in fail_to_pass} | set(new_files(test_patch)))


def _test_names(fail_to_pass: list[str]) -> set[str]:
    """Function names (``test_x``) and class names (``TestX``) of the hidden tests."""
    names = set()
    for test_id in fail_to_pass:
        parts = test_id.split("::")[1:]
        for part in parts:
            names.add(part.split("[")[0])
    return {n for n in names if n}


def changed_lines(patch: str) -> list[str]:
    """The removed and added lines of a diff that say something (whitespace-normalised)."""
    out = []
    for line in patch.splitlines():
        if line.startswith(("+++", "---")) or not line[:1] in ("+", "-"):
            continue
        text = " ".join(line[1:].split())
        if len(text) >= _MIN_CHANGED and re.search(r"[A-Za-z0-9]", text):
            out.append(text)
    return list(dict.fromkeys(out))


def check_statement(statement: str, *, fail_to_pass: list[str], gold_patch: str,
                    test_patch: str = "") -> list[str]:
    """Why `statement` gives the task away (empty: it does not).

    It may not contain a hidden test's name (function or class, as a word), a hidden test
    file (its path, its file name, or its module name), or a changed line of the gold patch.
    """
    problems = []
    for name in sorted(_test_names(fail_to_pass)):
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", statement):
            problems.append(f"names the hidden test {name!r}")
    for path in hidden_files(fail_to_pass, test_patch):
        base = path.rsplit("/", 1)[-1]
        module = base[:-3] if base.endswith(".py") else base
        named_module = module not in ("test", "tests") and re.search(
            rf"(?<!\w){re.escape(module)}(?!\w)", statement)
        if path in statement or base in statement or named_module:
            problems.append(f"names the hidden test file {path!r}")
    flat = " ".join(statement.split())
    for line in changed_lines(gold_patch):
        if line in flat:
            problems.append(f"quotes the gold patch's changed line {line!r}")
    return problems


# --- the deterministic writer ---------------------------------------------------------------


@dataclass
class _Check:
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


def _failing_check(source: str, tree: ast.Module, test_id: str, line: int | None, *,
                   last: bool = False) -> _Check | None:
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
    return _Check(params + helpers + setup_lines, check, subject,
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


def _failing_line(section: str, path: str, name: str) -> int | None:
    """The test file's line where the test failed: the first location of the hidden file in
    its traceback section (``path:N: in test_x`` with ``--tb=short``, ``path:N: Error`` with
    the long format; the test's own frame comes first)."""
    match = re.search(rf"^{re.escape(path)}:(\d+):", section, re.MULTILINE)
    return int(match.group(1)) if match else None


def _check_from_log(section: str, name: str) -> _Check | None:
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
    found = _failing_check(source, tree, f"x::{name}", None, last=True)
    if found is not None:
        found.imports = []  # the module the function came from is not known here
    return found


def _exception(lines: list[str]) -> str | None:
    for line in lines:
        match = _EXCEPTION.match(line)
        if match:
            return match.group("name")
    return None


def write_statement(package: str, *, fail_to_pass: list[str], test_patch: str, gold_patch: str,
                    output: str = "", errors: dict[str, list[str]] | None = None,
                    shown: int = 3) -> str:
    """An issue a user could have filed: the symptom, a reproduction, what was expected.

    `output` is the pytest log of the buggy package (for the failing line and exception
    type); `errors` ({test id: E lines}) stands in for it when only those are known. The
    result always passes `check_statement`: a richer form that would not is replaced by a
    plainer one.
    """
    sources = new_files(test_patch)
    sections = _failure_sections(output)
    checks: list[tuple[_Check, str | None]] = []
    seen: set[str] = set()
    for test_id in fail_to_pass:
        path, title = test_id.split("::")[0], ".".join(test_id.split("::")[1:])
        source = sources.get(path)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        e_lines, section = sections.get(title, ([], ""))
        if errors and test_id in errors:
            e_lines = errors[test_id]
        name = test_id.split("::")[-1].split("[")[0]
        line = _failing_line(section, path, name) if section else None
        found = _failing_check(source, tree, test_id, line)
        if found is None and section:
            found = _check_from_log(section, name)
        if found is None or found.check in seen:
            continue
        seen.add(found.check)
        checks.append((found, _exception(e_lines)))
        if len(checks) >= shown:
            break
    for attempt in _drafts(package, checks, len(fail_to_pass)):
        if not check_statement(attempt, fail_to_pass=fail_to_pass, gold_patch=gold_patch,
                               test_patch=test_patch):
            return attempt
    return _plain(package, len(fail_to_pass))


def _drafts(package: str, checks: list[tuple[_Check, str | None]], broken: int):
    """Statements from the richest (setup + check of up to three tests) to the plainest."""
    if checks:
        yield _render(package, checks, broken, with_setup=True)
        yield _render(package, checks, broken, with_setup=False)
        yield _render(package, checks[:1], broken, with_setup=False)
    yield _plain(package, broken)


def _symptom(error: str | None) -> str:
    if error is None:
        return "no longer behaves as before"
    if error == "AssertionError":
        return "gives a wrong result"
    return f"raises {error}"


def _render(package: str, checks: list[tuple[_Check, str | None]], broken: int, *,
            with_setup: bool) -> str:
    first, error = checks[0]
    subject = f"`{first.subject}`" if first.subject else package
    lines = [f"{package}: {subject} {_symptom(error)}", ""]
    lines.append(f"With {package} as it is now, {subject} {_symptom(error)}. "
                 "A minimal reproduction:")
    code = first.imports + ([""] if first.imports else []) + (first.setup if with_setup else []) + [first.check]
    lines += ["", "```python", *code, "```", ""]
    expects_error = any(word in first.check for word in ("should raise", "raises(", "assertRaises"))
    if error in (None, "AssertionError"):
        lines.append("The code above does not raise the error it should." if expects_error
                     else "The last line fails: the result is not the expected one.")
    else:
        lines.append(f"The last line raises `{error}` instead of "
                     + ("the error it should raise." if expects_error else "working."))
    others = checks[1:]
    if others:
        lines += ["", "The same happens elsewhere, for example:", ""]
        for check, other_error in others:
            note = f" (raises `{other_error}`)" if other_error not in (None, "AssertionError") else ""
            verb = "no longer holds" if check.check.startswith("assert ") else "fails"
            lines.append(f"- `{check.check}` {verb}{note}")
    lines = [line for line in lines if not (line.startswith("- `") and "\n" in line)]
    if lines[-1] == "" and lines[-2].endswith("for example:"):
        lines = lines[:-3]
    if broken > len(checks) + 1:
        lines += ["", f"Several other uses of {package} in the same area are affected too."]
    lines += ["", f"Expected: {package} behaves as it did and as documented; the code above runs "
              "without error."]
    return "\n".join(lines) + "\n"


def _plain(package: str, broken: int) -> str:
    """The last resort: a symptom with no code at all (always passes the check)."""
    return (f"{package}: a regression breaks existing behaviour\n\n"
            f"After the latest change, {package} no longer behaves as it did: code that used to "
            f"work now fails ({'one use' if broken == 1 else 'several uses'} of the library we "
            "rely on). Please find and fix the regression in the library code.\n")
