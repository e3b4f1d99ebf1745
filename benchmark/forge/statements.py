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

from benchmark.forge.reproduction import FailingCheck, check_from_log, failing_check, failing_line

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
    checks: list[tuple[FailingCheck, str | None]] = []
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
        line = failing_line(section, path, name) if section else None
        found = failing_check(source, tree, test_id, line)
        if found is None and section:
            found = check_from_log(section, name)
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


def _drafts(package: str, checks: list[tuple[FailingCheck, str | None]], broken: int):
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


def _render(package: str, checks: list[tuple[FailingCheck, str | None]], broken: int, *,
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
