"""The LM strategy: a model rewrites one library function so that it carries a subtle bug
(SWE-smith's "LM rewrite"), through any OpenAI-compatible endpoint; and the model that
writes a task's problem statement as a user's issue (`lm_statement`).

The model sees one function (its source and file path) and answers with the whole function
rewritten. The answer must parse, define one function of the same name, and differ from
the original; the rewrite then replaces exactly the lines of that function (decorators and
the rest of the file untouched) and becomes a `Mutation` of kind ``lm_rewrite``. From there
it goes through the same screening, deduplication and validation as an AST mutation: a
model's bug is kept only when the package's own tests catch it and the reverse patch fixes
them. Endpoint: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` and a model name
(``RATCHET_FORGE_MODEL``, default ``gpt-4o-mini``).

Status: the plumbing (prompt, answer parsing, splicing, the pipeline) is tested against
ratchet's scripted OpenAI-protocol server; no task in the shipped suite came from a model
(no endpoint was available when it was forged).
"""

from __future__ import annotations

import ast
import os
import random
import re
import textwrap
from collections.abc import Callable
from typing import Any

from benchmark.forge.mutations import Mutation, _Offsets

__all__ = [
    "LM_KIND",
    "function_sites",
    "lm_mutations",
    "lm_statement",
    "openai_complete",
    "rewrite_prompt",
    "splice_rewrite",
    "statement_prompt",
]

LM_KIND = "lm_rewrite"
_MIN_LINES, _MAX_LINES = 4, 60
_SYSTEM = ("You inject realistic bugs into Python libraries to build a benchmark for coding "
           "agents. Answer with one ```python code block and nothing else.")
_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def function_sites(path: str, source: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions and methods worth rewriting: a few lines to a screenful, not trivial."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if _MIN_LINES <= length <= _MAX_LINES:
                sites.append(node)
    return sorted(sites, key=lambda n: n.lineno)


def rewrite_prompt(package: str, path: str, function_source: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": (
            f"This function is from the library {package}, file {path}:\n\n"
            f"```python\n{function_source}\n```\n\n"
            "Rewrite it with exactly one subtle logic bug of the kind a developer could "
            "introduce by mistake (a wrong boundary, a missed case, a swapped condition, a "
            "wrong default), so that some existing unit test would fail. Keep the name, "
            "the signature, the docstring and the style; add no comment that points at the "
            "bug. Return the whole function.")},
    ]


def splice_rewrite(path: str, source: str, node: ast.AST, answer: str) -> Mutation | None:
    """The model's answer as a Mutation replacing the function's lines, or None when the
    answer is not one function of the same name, or changes nothing."""
    found = _CODE.search(answer)
    code = textwrap.dedent(found.group(1) if found else answer).strip("\n")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(defs) != 1 or defs[0].name != node.name:
        return None
    # the answer's own decorators are dropped: the original's stay in place
    new_lines = code.splitlines()[defs[0].lineno - 1:]
    offsets = _Offsets(source)
    first = offsets.lines[node.lineno - 1]
    indent = first[:len(first) - len(first.lstrip())]
    replacement = "".join(f"{indent}{line}\n" if line.strip() else "\n" for line in new_lines)
    start, end = offsets.starts[node.lineno - 1], offsets.starts[node.end_lineno]
    original = source[start:end]
    if replacement.strip() == original.strip():
        return None
    mutated = source[:start] + replacement + source[end:]
    try:
        compile(mutated, path, "exec")
    except (SyntaxError, ValueError):
        return None
    if ast.dump(ast.parse(mutated)) == ast.dump(ast.parse(source)):
        return None  # only formatting changed
    return Mutation(path, LM_KIND, node.lineno, node.col_offset, node.name, start, end,
                    original, replacement)


def openai_complete(model: str | None = None) -> Callable[[list[dict[str, str]]], str]:
    """A completion function over the configured OpenAI-compatible endpoint."""
    import openai

    client = openai.OpenAI(base_url=os.environ.get("OPENAI_BASE_URL"),
                           api_key=os.environ.get("OPENAI_API_KEY") or "none", max_retries=2)
    name = model or os.environ.get("RATCHET_FORGE_MODEL") or "gpt-4o-mini"

    def complete(messages: list[dict[str, str]]) -> str:
        response: Any = client.chat.completions.create(model=name, messages=messages,
                                                       temperature=0.8)
        return response.choices[0].message.content or ""

    return complete


def lm_mutations(package: str, files: dict[str, str], complete: Callable[[list[dict]], str],
                 *, limit: int, seed: int = 0,
                 on_event: Callable[[str], None] = lambda message: None) -> tuple[list[Mutation], int]:
    """Up to `limit` model rewrites of distinct functions; (mutations, model calls made)."""
    sites = [(path, source, node) for path, source in sorted(files.items())
             for node in function_sites(path, source)]
    random.Random(f"{package}:lm:{seed}").shuffle(sites)
    out, calls = [], 0
    for path, source, node in sites:
        if len(out) >= limit or calls >= 2 * limit:
            break
        offsets = _Offsets(source)
        end = offsets.span(node)[1]
        function_source = textwrap.dedent(source[offsets.starts[node.lineno - 1]:end])
        calls += 1
        try:
            answer = complete(rewrite_prompt(package, path, function_source))
        except Exception as exc:  # noqa: BLE001 (any endpoint failure costs one candidate, not the forge)
            on_event(f"model call for {path}:{node.name} failed: {exc}")
            continue
        mutation = splice_rewrite(path, source, node, answer)
        if mutation is not None:
            out.append(mutation)
    return out, calls


_ISSUE_SYSTEM = (
    "You write realistic GitHub issues for a benchmark of coding agents. You are shown a bug "
    "(as the patch that fixes it), the output of the package's tests that fail because of it, "
    "and the source of those tests. Write the issue a user of the package would file: a short "
    "title line, what they tried, a minimal reproduction they could run (plain Python using the "
    "package's public API, with the inputs and the expected value), what they expected and what "
    "happened instead. Rules: never mention tests, test files, test names or test classes; never "
    "say where the bug is or how to fix it; never quote the patch or any line of it; no "
    "tracebacks copied verbatim, no object reprs with memory addresses. Answer with the issue "
    "text only (Markdown), no preamble.")
_MAX_PROMPT_PART = 6000


def _clip(text: str, limit: int = _MAX_PROMPT_PART) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... cut ...]\n"


def statement_prompt(package: str, *, fail_to_pass: list[str], output: str, test_patch: str,
                     gold_patch: str, retry_reason: str = "") -> list[dict[str, str]]:
    """The messages that ask for an issue: the fix, the failing output and the test source.
    (The model sees the hidden tests; `check_statement` makes sure its answer does not
    repeat their names, files or the fix.)"""
    from benchmark.forge.statements import failure_messages, new_files

    failures = failure_messages(output)
    shown = "\n".join(f"- {' / '.join(lines[:3])}" for lines in list(failures.values())[:5])
    sources = "\n\n".join(_clip(text, 3000) for text in new_files(test_patch).values())
    user = (f"Package: {package}\n\nThe fix (do not reveal):\n```diff\n{_clip(gold_patch)}\n```\n\n"
            f"{len(fail_to_pass)} checks fail because of the bug; their errors:\n{shown or '(none captured)'}"
            f"\n\nSource of the failing checks (for inputs and expected values only):\n"
            f"```python\n{_clip(sources)}\n```\n\nWrite the issue.")
    if retry_reason:
        user += f"\n\nYour previous answer was refused because it {retry_reason}. Write it again without that."
    return [{"role": "system", "content": _ISSUE_SYSTEM}, {"role": "user", "content": user}]


def lm_statement(complete: Callable[[list[dict]], str], package: str, *, fail_to_pass: list[str],
                 output: str, test_patch: str, gold_patch: str, max_calls: int = 2,
                 on_event: Callable[[str], None] = lambda message: None) -> tuple[str | None, int]:
    """(a model-written statement that passes `check_statement`, or None; model calls made).
    A refused answer goes back to the model once with the reason."""
    from benchmark.forge.statements import check_statement

    reason, calls = "", 0
    while calls < max_calls:
        calls += 1
        try:
            answer = complete(statement_prompt(package, fail_to_pass=fail_to_pass, output=output,
                                               test_patch=test_patch, gold_patch=gold_patch,
                                               retry_reason=reason)).strip()
        except Exception as exc:  # noqa: BLE001 (a failed call costs the model statement, not the task)
            on_event(f"statement model call failed: {exc}")
            return None, calls
        problems = check_statement(answer, fail_to_pass=fail_to_pass, gold_patch=gold_patch,
                                   test_patch=test_patch)
        if answer and not problems:
            return answer + "\n", calls
        reason = "; ".join(problems) if problems else "was empty"
        on_event(f"model statement refused: {reason}")
    return None, calls
