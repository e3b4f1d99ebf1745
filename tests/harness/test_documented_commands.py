"""The README and docs/ are a promise: every `ratchet ...` command they show exists and parses.

Two kinds of example are read from the Markdown files themselves, so an edit of a doc is
tested too:

- lines in fenced code blocks are complete commands: each is parsed by ratchet's own click
  command tree (typer's parser), exactly as the shell would split it, and must parse;
- inline code spans (the README's command table, prose) are synopses with placeholders
  (``RUN``, ``[--from N]``, ``strict|margin:K``): each must name a command that exists, and
  every option it shows must be one of that command's options.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from harness.cli import app
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_CONTROL = re.compile(r"\s*(?:&&|\|\||;|\|)\s*")
_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _root():
    """ratchet's click command tree (typer 0.29 carries its own click: duck-typed below)."""
    return typer.main.get_command(app)


class UsageProblem(Exception):
    """What the parser said about an example, or that it named no such command."""


def _is_group(command) -> bool:
    return hasattr(command, "list_commands")


def _commands_in(line: str) -> list[str]:
    """The `ratchet ...` commands of one shell line, each without the leading `ratchet`."""
    line = re.sub(r"\s+#.*$", "", line).strip()
    found = []
    for part in _CONTROL.split(line):
        words = part.strip().split(None, 1)
        if words and Path(words[0]).name == "ratchet":
            found.append(words[1] if len(words) > 1 else "")
    return found


def code_block_examples(text: str) -> list[str]:
    examples = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            examples += _commands_in(line)
    return examples


def inline_examples(text: str) -> list[str]:
    prose = _FENCE.sub("", text)
    spans = [span.strip().replace("\\|", "|")
             for _, span in _INLINE.findall(prose.replace("\n", " "))]
    # `ratchet WORD ...` where WORD could be a command (not, say, a log line's `ratchet steps:`)
    return [span.split(None, 1)[1] if " " in span else "" for span in spans
            if span.split()[:1] == ["ratchet"]
            and (len(span.split()) == 1 or re.fullmatch(r"-{0,2}[a-z][a-z-]*", span.split()[1]))]


def bare_options(text: str) -> set[str]:
    """Options shown on their own in prose (`--workers`), not tied to a command."""
    return set(re.findall(r"(?<!`)`(--[a-z][\w-]*)[^`]*`", _FENCE.sub("", text)))


FOREIGN_OPTIONS = {
    "--network": "docker run", "--reject": "git apply", "--no-ext-diff": "git diff", "--color": "pytest",
    "--repeat": "perf/*.py", "--rounds": "perf/*.py",
    "--doctest-modules": "pytest", "--maxfail": "pytest",
}
"""Options of other tools that the docs quote; anything else shown bare must be ratchet's."""


def _all_option_names(command=None) -> set[str]:
    command = command or _root()
    names = _option_names(command)
    if _is_group(command):
        context = command.context_class(command)
        for name in command.list_commands(context):
            names |= _all_option_names(command.get_command(context, name))
    return names


def resolve(words: list[str]):
    """The command `words` names, the path to it, and the words left for it."""
    command, path = _root(), []
    while _is_group(command) and words and not words[0].startswith("-"):
        context = command.context_class(command)
        sub = command.get_command(context, words[0])
        if sub is None:
            raise UsageProblem(f"unknown command `ratchet {' '.join(path + [words[0]])}` "
                               f"(known: {', '.join(sorted(command.list_commands(context)))})")
        command, path, words = sub, path + [words[0]], words[1:]
    return command, path, words


def _option_names(command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def check_code_example(example: str) -> None:
    """Parse a complete command with ratchet's own parser; a bad command or option raises."""
    command, path, args = resolve(shlex.split(example))
    try:
        command.make_context(" ".join(["ratchet", *path]), args)
    except Exception as exc:  # the parser's own UsageError / BadParameter (typer's click)
        if not hasattr(exc, "format_message"):
            raise
        raise UsageProblem(exc.format_message()) from exc


def check_inline_example(example: str) -> None:
    """A synopsis: the command must exist and each option shown must be one of its options."""
    words = re.split(r"[\s\[\]()|]+", example)
    command, path, _ = resolve([w for w in words if w])
    unknown = sorted({opt for opt in _OPTION.findall(example)} - _option_names(command) - {"--help"})
    if unknown:
        raise UsageProblem(f"`ratchet {' '.join(path)}` has no option {', '.join(unknown)}")


def _cases(kind):
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for example in (code_block_examples(text) if kind == "code" else inline_examples(text)):
            found.append(pytest.param(example, id=f"{doc.relative_to(ROOT)}: ratchet {example}"[:120]))
    return found


def test_the_docs_show_ratchet_commands_at_all():
    """The readers below find what they are meant to find (the tests below cannot pass empty)."""
    assert len(_cases("code")) >= 15 and len(_cases("inline")) >= 20
    assert "demo" in [c.values[0] for c in _cases("code")]


@pytest.mark.parametrize("example", _cases("code"))
def test_every_code_block_command_parses(example):
    """Each `ratchet ...` line of a code block in README.md or docs/ parses as written."""
    try:
        check_code_example(example)
    except UsageProblem as exc:
        pytest.fail(f"`ratchet {example}`: {exc}")


@pytest.mark.parametrize("example", _cases("inline"))
def test_every_inline_command_names_real_options(example):
    """Each `ratchet ...` synopsis in README.md or docs/ names a real command and real options."""
    try:
        check_inline_example(example)
    except UsageProblem as exc:
        pytest.fail(str(exc))


def test_every_bare_option_in_the_docs_is_an_option_of_some_command():
    """An option named in prose (`--max-proposal-retries times`) must exist somewhere."""
    known = _all_option_names() | set(FOREIGN_OPTIONS)
    unknown = {f"{doc.relative_to(ROOT)}: {option}" for doc in DOCS
               for option in bare_options(doc.read_text(encoding="utf-8")) if option not in known}
    assert not unknown, sorted(unknown)
    assert bare_options("retried `--max-proposal-retries` times") - known == {"--max-proposal-retries"}


@pytest.mark.parametrize("example, problem", [
    ("run --suite quickstart --max-proposal-retries 3", "No such option"),
    ("frobnicate RUN", "unknown command"),
    ("bench frob --suite S", "unknown command"),
    ("run --suite quickstart --generations many", "valid integer"),
])
def test_the_code_check_catches_what_does_not_exist(example, problem):
    """The checker itself fails on an unknown command, option or a value that does not parse."""
    with pytest.raises(UsageProblem, match=problem):
        check_code_example(example)


@pytest.mark.parametrize("example", [
    "run --suite S [--max-proposal-retries N]", "resume RUN [--frm N]", "bench grok --suite S"])
def test_the_inline_check_catches_what_does_not_exist(example):
    with pytest.raises(UsageProblem):
        check_inline_example(example)


def test_help_texts_show_the_install_extra():
    """rich reads `[ray]` as markup and drops it; the help must still say `ratchet[ray]`."""
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["bench", "run", "--help"], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "ratchet[ray]" in out.output, out.output
