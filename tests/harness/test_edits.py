"""The meta model's answer format and its application: real files in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.propose.edits import (
    EditRejected,
    NotAnEdit,
    SearchReplace,
    Snapshot,
    WholeFile,
    apply_edits,
    check_worktree,
    parse_answer,
)


SR_CONFIG = """\
agent_seed/config.yaml
<<<<<<< SEARCH
step_limit: 30
=======
step_limit: 40
>>>>>>> REPLACE
"""


@pytest.fixture
def worktree(worktree: Path) -> Path:
    """The seed agent's copy (conftest), plus a file outside the agent."""
    (worktree / "harness").mkdir()
    (worktree / "harness" / "trusted.py").write_text("TRUSTED = True\n")
    return worktree


# -- parse --------------------------------------------------------------------------------

def test_parse_search_replace_with_diagnosis_headline_is_first_line():
    proposal = parse_answer("<diagnosis>\nRaise the step limit\nRuns end at 30 steps.\n"
                            "</diagnosis>\n\n" + SR_CONFIG)
    assert proposal.headline == "Raise the step limit"
    assert proposal.diagnosis == "Raise the step limit\nRuns end at 30 steps."
    assert proposal.edits == (SearchReplace("agent_seed/config.yaml", "step_limit: 30",
                                            "step_limit: 40"),)


def test_parse_whole_file_block_keeps_content_exactly():
    proposal = parse_answer('<diagnosis>Add a lesson</diagnosis>\n'
                            '<file path="agent_seed/lessons.md">\n- one\n\n- two\n</file>\n')
    assert proposal.edits == (WholeFile("agent_seed/lessons.md", "- one\n\n- two\n"),)


def test_parse_multiple_edits_in_answer_order_in_fences_and_repeated_path():
    """Edits come out in the order they are written, whatever their format; a block right
    after another block may leave out the path (aider's convention); fences are allowed."""
    text = ('<diagnosis>Two things</diagnosis>\n'
            '<file path="agent_seed/lessons.md">\n- new\n</file>\n'
            "```yaml\n" + SR_CONFIG + "<<<<<<< SEARCH\ncommand_timeout_s: 60\n=======\n"
            "command_timeout_s: 90\n>>>>>>> REPLACE\n```\n\n"
            "`agent_seed/agent.py`\n<<<<<<< SEARCH\na\n  b\n=======\n>>>>>>> REPLACE\n")
    edits = parse_answer(text).edits
    assert [type(e).__name__ for e in edits] == ["WholeFile", "SearchReplace", "SearchReplace",
                                                 "SearchReplace"]
    assert edits[2] == SearchReplace("agent_seed/config.yaml", "command_timeout_s: 60",
                                     "command_timeout_s: 90")
    assert edits[3] == SearchReplace("agent_seed/agent.py", "a\n  b", "")


def test_missing_diagnosis_is_allowed_and_headline_names_the_files():
    """Decision: a valid edit is not thrown away for missing prose; the headline then
    says which files change."""
    proposal = parse_answer(SR_CONFIG)
    assert proposal.diagnosis == ""
    assert proposal.headline == "change agent_seed/config.yaml"


def test_markers_inside_diagnosis_or_whole_file_are_not_parsed_as_edits():
    text = ("<diagnosis>Doc\nThe format is <<<<<<< SEARCH ... >>>>>>> REPLACE</diagnosis>\n"
            '<file path="agent_seed/NOTES.md">\nx\n<<<<<<< SEARCH\ny\n=======\nz\n'
            ">>>>>>> REPLACE\n</file>\n")
    edits = parse_answer(text).edits
    assert len(edits) == 1 and isinstance(edits[0], WholeFile)
    assert "<<<<<<< SEARCH" in edits[0].content


@pytest.mark.parametrize(("text", "says"), [
    ("I think the agent should try harder.", "holds no edit"),
    ("", "holds no edit"),
    ("<diagnosis>x</diagnosis>", "holds no edit"),
    ("agent_seed/config.yaml\n<<<<<<< SEARCH\nstep_limit: 30\n", "not closed"),
    ("agent_seed/config.yaml\n<<<<<<< SEARCH\na\n>>>>>>> REPLACE\n", "not closed"),
    ("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", "path"),
    ("Here is my change:\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", "path"),
    ('<file path="agent_seed/x.md">\nno end\n', "not closed"),
    ('<file path="">\nx\n</file>', "empty path"),
    ("<diagnosis>never closed\n" + SR_CONFIG, "</diagnosis>"),
    ("agent_seed/a.py\n=======\nb\n>>>>>>> REPLACE\n", "SEARCH"),
])
def test_garbage_or_broken_format_is_not_an_edit_with_an_actionable_message(text, says):
    with pytest.raises(NotAnEdit, match=None) as info:
        parse_answer(text)
    assert says in str(info.value)


# -- apply --------------------------------------------------------------------------------

def test_apply_replaces_exactly_once_and_returns_changed_paths(worktree: Path):
    before = (worktree / "agent_seed/config.yaml").read_text()
    changed = apply_edits(worktree, parse_answer(SR_CONFIG).edits)
    after = (worktree / "agent_seed/config.yaml").read_text()
    assert changed == ["agent_seed/config.yaml"]
    assert after == before.replace("step_limit: 30", "step_limit: 40", 1)
    assert "step_limit: 40              # model calls per run" in after


def test_search_not_found_names_closest_line_and_writes_nothing(worktree: Path):
    snapshot = Snapshot.take(worktree)
    edits = (WholeFile("agent_seed/lessons.md", "changed\n"),
             SearchReplace("agent_seed/config.yaml", "step_limit: 31", "step_limit: 40"))
    with pytest.raises(EditRejected, match="not found") as info:
        apply_edits(worktree, edits)
    assert "agent_seed/config.yaml" in str(info.value)
    assert "closest line is 6: 'step_limit: 30" in str(info.value)
    assert Snapshot.take(worktree) == snapshot  # the first edit was not written either


def test_search_found_twice_is_rejected_with_count_and_lines(worktree: Path):
    path = worktree / "agent_seed/dup.py"
    path.write_text("x = 1\ny = 2\nx = 1\n")
    with pytest.raises(EditRejected, match="found 2 times") as info:
        apply_edits(worktree, [SearchReplace("agent_seed/dup.py", "x = 1", "x = 3")])
    assert "lines 1, 3" in str(info.value)
    assert path.read_text() == "x = 1\ny = 2\nx = 1\n"


def test_edits_of_one_file_apply_in_sequence(worktree: Path):
    changed = apply_edits(worktree, [
        WholeFile("agent_seed/new.txt", "a\n"),
        SearchReplace("agent_seed/new.txt", "a", "b"),
    ])
    assert changed == ["agent_seed/new.txt"]
    assert (worktree / "agent_seed/new.txt").read_text() == "b\n"


@pytest.mark.parametrize("path", [
    "agent_seed/../harness/trusted.py",
    "../outside.py",
    "harness/trusted.py",
    "agent_seed",
    "agent_seed/sub/../../harness/trusted.py",
])
def test_paths_outside_the_agent_dir_are_rejected_naming_the_path(worktree: Path, path: str):
    with pytest.raises(EditRejected) as info:
        apply_edits(worktree, [WholeFile(path, "TRUSTED = False\n")])
    assert path in str(info.value)
    assert (worktree / "harness/trusted.py").read_text() == "TRUSTED = True\n"
    assert not (worktree.parent / "outside.py").exists()


def test_absolute_path_is_rejected_even_when_it_points_into_the_agent_dir(worktree: Path):
    target = worktree / "agent_seed" / "lessons.md"
    with pytest.raises(EditRejected, match="absolute"):
        apply_edits(worktree, [WholeFile(str(target), "x\n")])
    with pytest.raises(EditRejected, match="absolute"):
        apply_edits(worktree, [WholeFile("/etc/passwd", "x\n")])
    assert target.read_text() != "x\n"


def test_symlink_escapes_are_rejected(worktree: Path, tmp_path: Path):
    """A symlink inside the agent dir cannot carry a write outside it, whether it is a
    linked directory or a linked file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.py").write_text("safe\n")
    os.symlink(outside, worktree / "agent_seed" / "linkdir")
    os.symlink(worktree / "harness" / "trusted.py", worktree / "agent_seed" / "alias.py")
    with pytest.raises(EditRejected, match="agent_seed/linkdir/victim.py.*symlink"):
        apply_edits(worktree, [WholeFile("agent_seed/linkdir/victim.py", "owned\n")])
    with pytest.raises(EditRejected, match="agent_seed/alias.py"):
        apply_edits(worktree, [SearchReplace("agent_seed/alias.py", "True", "False")])
    assert (outside / "victim.py").read_text() == "safe\n"
    assert (worktree / "harness/trusted.py").read_text() == "TRUSTED = True\n"


def test_whole_file_creates_new_file_and_directories(worktree: Path):
    changed = apply_edits(worktree, [WholeFile("agent_seed/prompts/extra.j2", "{{ x }}\n")])
    assert changed == ["agent_seed/prompts/extra.j2"]
    assert (worktree / "agent_seed/prompts/extra.j2").read_text() == "{{ x }}\n"


def test_empty_search_creates_a_missing_file_but_not_an_existing_one(worktree: Path):
    assert apply_edits(worktree, [SearchReplace("agent_seed/n.md", "", "hello")]) == [
        "agent_seed/n.md"]
    assert (worktree / "agent_seed/n.md").read_text() == "hello\n"
    with pytest.raises(EditRejected, match="SEARCH text is empty"):
        apply_edits(worktree, [SearchReplace("agent_seed/n.md", "", "again")])
    with pytest.raises(EditRejected, match="no such file"):
        apply_edits(worktree, [SearchReplace("agent_seed/missing.py", "x", "y")])


def test_an_edit_that_changes_nothing_returns_no_paths(worktree: Path):
    text = (worktree / "agent_seed/lessons.md").read_text()
    assert apply_edits(worktree, [WholeFile("agent_seed/lessons.md", text)]) == []


# -- check --------------------------------------------------------------------------------

def test_check_passes_on_the_seed_agent(worktree: Path):
    assert check_worktree(worktree) == []
    assert not list((worktree / "agent_seed").rglob("__pycache__"))  # no bytecode written


def test_check_reports_syntax_error_with_file_and_line(worktree: Path):
    path = worktree / "agent_seed/errors.py"
    source = path.read_text()
    path.write_text(source + "\n\ndef broken(:\n    pass\n")
    problems = check_worktree(worktree)
    assert len(problems) == 1
    line = source.count("\n") + 3
    assert problems[0].startswith(f"agent_seed/errors.py:{line}: SyntaxError"), problems


def test_check_reports_bad_yaml_and_a_non_mapping_config(worktree: Path):
    config = worktree / "agent_seed/config.yaml"
    config.write_text("model: [unclosed\nstep_limit: 3\n")
    (problem,) = check_worktree(worktree)
    assert problem.startswith("agent_seed/config.yaml: not valid YAML")
    config.write_text("- a list\n")
    assert check_worktree(worktree) == ["agent_seed/config.yaml: must be a mapping, got list"]


def test_check_reports_a_broken_template_in_config(worktree: Path):
    config = worktree / "agent_seed/config.yaml"
    config.write_text(config.read_text().replace("{{ repo }}.\n", "{{ repo .\n", 1))
    (problem,) = check_worktree(worktree)
    assert "template 'system'" in problem


# -- snapshot -----------------------------------------------------------------------------

def test_snapshot_restores_tree_byte_for_byte(worktree: Path, tmp_path: Path):
    agent = worktree / "agent_seed"
    os.symlink("lessons.md", agent / "inner_link.md")
    (agent / "empty").mkdir()
    (agent / "agent.py").chmod(0o755)
    snapshot = Snapshot.take(agent)
    (agent / "agent.py").write_text("broken(")
    (agent / "agent.py").chmod(0o600)
    (agent / "lessons.md").unlink()
    (agent / "inner_link.md").unlink()
    (agent / "inner_link.md").write_text("now a file")
    (agent / "empty").rmdir()
    (agent / "new" / "deep").mkdir(parents=True)
    (agent / "new" / "deep" / "x.py").write_text("x")
    snapshot.restore()
    assert Snapshot.take(agent) == snapshot
    assert os.readlink(agent / "inner_link.md") == "lessons.md"
