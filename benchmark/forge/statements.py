"""Problem statements written from what the failing tests report, never from the diff.

The statement is built only from the pytest log of the mutated package: the failing tests'
names and, per test, the ``E`` lines of its traceback (the exception type and the assertion
message). It never quotes the library's source, the mutation, or the fixed code.
"""

from __future__ import annotations

import re

__all__ = ["failure_messages", "problem_statement"]

_SECTION = re.compile(r"^_{3,} (?P<title>.+?) _{3,}$", re.MULTILINE)
_FAILURES = re.compile(r"^=+ (FAILURES|ERRORS) =+$", re.MULTILINE)
_END = re.compile(r"^=+ (short test summary info|warnings summary|.* in [\d.]+s.*) =+$", re.MULTILINE)


def failure_messages(output: str) -> dict[str, list[str]]:
    """{section title (``test_x[param]`` or ``TestClass.test_x``): its ``E`` lines}."""
    found = _FAILURES.search(output)
    if not found:
        return {}
    body = output[found.end():]
    end = _END.search(body)
    body = body[:end.start()] if end else body
    sections = list(_SECTION.finditer(body))
    messages: dict[str, list[str]] = {}
    for index, section in enumerate(sections):
        stop = sections[index + 1].start() if index + 1 < len(sections) else len(body)
        lines = [line[1:].strip() for line in body[section.end():stop].splitlines()
                 if line.startswith("E ")]
        # a chained exception repeats its E lines; each distinct line is said once
        messages.setdefault(section.group("title"), list(dict.fromkeys(l for l in lines if l))[:8])
    return messages


def _title_of(test_id: str) -> str:
    """`path::Class::test[p]` → `Class.test[p]`, the title pytest gives its section."""
    return ".".join(test_id.split("::")[1:])


def _readable(test_id: str) -> str:
    name = test_id.split("::")[-1].split("[")[0]
    name = re.sub(r"^test_?", "", name)
    return name.replace("_", " ").strip() or test_id


def problem_statement(package: str, failing: list[str], output: str, *, shown: int = 3) -> str:
    """An issue-style report: which behaviour broke, as the tests saw it."""
    messages = failure_messages(output)
    files = sorted({t.split("::")[0] for t in failing})
    first = failing[0]
    lines = [
        f"{package}: {_readable(first)} is broken",
        "",
        (f"Something in {package} regressed: {len(failing)} test{'s' if len(failing) != 1 else ''} "
         f"that used to pass now fail{'s' if len(failing) == 1 else ''} "
         f"(in {', '.join(files)})."),
        "",
    ]
    for test_id in failing[:shown]:
        detail = messages.get(_title_of(test_id)) or []
        lines.append(f"`{test_id}` fails" + (" with:" if detail else "."))
        if detail:
            lines.append("")
            lines += [f"    {line}" for line in detail]
        lines.append("")
    if len(failing) > shown:
        lines.append(f"... and {len(failing) - shown} more tests fail the same way.")
        lines.append("")
    lines.append(f"Please fix {package} so that it behaves correctly again; the tests are "
                 "right, the library code is wrong.")
    return "\n".join(lines) + "\n"
