"""Which paths a candidate patch may not change, and finding every path a patch names."""

from __future__ import annotations

import pytest

from benchmark._guard import paths_named_in_patch, protected_reason


@pytest.mark.parametrize("path, reason", [
    ("conftest.py", "pytest conftest"),
    ("src/pkg/conftest.py", "pytest conftest"),
    ("pytest.ini", "test configuration"),
    ("setup.cfg", "test configuration"),
    ("tox.ini", "test configuration"),
    ("pyproject.toml", "test configuration"),
    ("sitecustomize.py", "interpreter start-up hook"),
    ("src/usercustomize.py", "interpreter start-up hook"),
    ("evil.pth", "interpreter start-up hook"),
    ("pkg/__pycache__/mod.cpython-311.pyc", "compiled bytecode"),
    ("tests/helpers.py", "test file"),
    ("test_inflection.py", "test file"),
    ("pkg/core_test.py", "test file"),
    ("semver/tests/data.json", "test file"),
    ("hidden/check.py", "hidden test file"),
])
def test_protected_paths(path, reason):
    assert protected_reason(path, {"hidden/check.py"}) == reason


@pytest.mark.parametrize("path", ["inflection/__init__.py", "src/semver/version.py",
                                  "docs/testing.rst", "contest.py", "README.md"])
def test_source_paths_are_not_protected(path):
    assert protected_reason(path) is None


def test_every_path_a_patch_tool_could_write_is_named():
    """GNU patch also honours ---/+++ and Index: lines, git honours rename/copy headers:
    a trick must not hide a path from the guard behind any of them."""
    patch = (
        "diff --git a/pkg/mod.py b/pkg/mod.py\n--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -1 +1 @@\n-a\n+b\n"
        "diff --git a/old.py b/conftest.py\nsimilarity index 100%\nrename from old.py\nrename to conftest.py\n"
        "Index: x.pth\n--- /dev/null\n+++ x.pth\n@@ -0,0 +1 @@\n+import os\n"
    )
    assert paths_named_in_patch(patch) == ["pkg/mod.py", "old.py", "conftest.py", "x.pth"]


def test_config_files_are_pytests_own_list():
    """Every file name pytest discovers its configuration in, for the pinned pytest."""
    from _pytest.config.findpaths import CONFIG_LOADERS_BY_NAME

    from benchmark._guard import CONFIG_FILES

    assert tuple(CONFIG_LOADERS_BY_NAME) == CONFIG_FILES


@pytest.mark.parametrize("name", ["pytest.toml", ".pytest.toml", "sub/pytest.toml"])
def test_pytest_toml_is_test_configuration(name):
    assert protected_reason(name) == "test configuration"


def _diff(path: str, extra: str = "") -> str:
    return (f"diff --git a/{path} b/{path}\n{extra}--- /dev/null\n+++ b/{path}\n"
            "@@ -0,0 +1 @@\n+x\n")


@pytest.mark.parametrize("patch, reason", [
    (_diff(".git/hooks/post-checkout", "new file mode 100755\n"), "inside .git"),
    (_diff("sub/.git/config"), "inside .git"),
    ('diff --git "a/\\056git/hooks/x" "b/\\056git/hooks/x"\n--- /dev/null\n'
     '+++ "b/\\056git/hooks/x"\n@@ -0,0 +1 @@\n+x\n', "inside .git"),
    ("--- /dev/null\n+++ z/.git/hooks/pre-commit\t2020-01-01\n@@ -0,0 +1 @@\n+x\n", "inside .git"),
    ("*** /dev/null\n--- x/.git/config\n", "inside .git"),
    ("Index: .git/config\n", "inside .git"),
    ("--- /dev/null\n+++ /etc/passwd\n@@ -0,0 +1 @@\n+x\n", "absolute path"),
    (_diff("../outside.py"), "escapes the repository"),
    (_diff("a/../../home/sandbox/.bashrc"), "escapes the repository"),
    (_diff("helper.egg-info/entry_points.txt"), "packaging metadata"),
    (_diff("src/helper-1.0.dist-info/entry_points.txt"), "packaging metadata"),
    (_diff("link.py", "new file mode 120000\n"), "symlink"),
])
def test_patch_headers_that_refuse_a_patch(patch, reason):
    """Checked on the patch's own headers, before git apply or GNU patch reads it: GNU patch
    writes under .git where git apply refuses, and decodes C-quoted names."""
    from benchmark._guard import header_problems

    problems = header_problems(patch)
    assert problems and any(reason in p for p in problems), problems


def test_an_honest_git_diff_is_admitted():
    from benchmark._guard import header_problems

    patch = (_diff("src/pkg/mod.py") + "diff --git a/old.py b/new.py\nsimilarity index 90%\n"
             "rename from old.py\nrename to new.py\n"
             "diff --git a/img.png b/img.png\nnew file mode 100644\nGIT binary patch\nliteral 1\n")
    assert header_problems(patch) == []


@pytest.mark.parametrize("path, module", [
    ("pytest.py", "pytest"), ("_pytest/__init__.py", "_pytest"), ("pprint.py", "pprint"),
    ("src/pprint.py", "pprint"), ("pluggy/__init__.py", "pluggy"), ("py.py", "py"),
    ("json.cpython-311-x86_64-linux-gnu.so", "json"), ("src/_pytest/x.py", "_pytest"),
    ("pkg/pprint.py", None), ("pprint.txt", None), ("docs/pytest.py", None), ("mypkg.py", None),
])
def test_new_top_level_modules_that_shadow(path, module):
    import sys

    from benchmark._guard import TEST_RUNNER_MODULES, shadowed_module

    names = set(sys.stdlib_module_names) | set(TEST_RUNNER_MODULES)
    assert shadowed_module(path, names) == module


def _context_diff() -> str:
    import difflib

    before = "def f():\n    return 1\n".splitlines(True)
    after = "def f():\n    import os; os._exit(0)\n    return 1\n".splitlines(True)
    return "".join(difflib.context_diff(before, after, "a/pkg/mod.py", "b/pkg/mod.py"))


def test_a_context_diff_is_refused_before_any_tool_reads_it():
    """GNU patch, the grader's last fallback, applies context diffs, normal diffs and ed
    scripts; the static scan reads only unified hunks, so such a patch would be graded
    unseen (it finds nothing here). Admission refuses it, unless the rule is off."""
    from benchmark._guard import header_problems
    from benchmark._scan import scan_patch

    patch = _context_diff()
    assert scan_patch(patch) == []  # the blind spot
    assert any("not a unified diff" in p for p in header_problems(patch))
    assert header_problems(patch, unified=False) == []
    normal = "1a2\n> import os; os._exit(0)\n"
    assert any("not a unified diff" in p for p in header_problems(normal))


def test_unified_diffs_of_every_shape_are_admitted():
    """Hunks with lines that look like other formats inside them, `git format-patch` mail
    with its `---` line, and a binary patch are all unified."""
    from benchmark import load_suite
    from benchmark._guard import other_format_lines

    inside = ("diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n"
              " *** not a header\n-1a2\n+> quoted\n \\ no\n")
    mail = ("From abc Mon Sep 17 00:00:00 2001\nSubject: [PATCH] fix\n\n---\n x.py | 2 +-\n"
            " 1 file changed\n\n" + inside)
    binary = ("diff --git a/b.bin b/b.bin\nnew file mode 100644\nindex 0000000..e69de29\n"
              "GIT binary patch\nliteral 3\nKcmZ>Y%>@7gAOHXW\n\nliteral 0\nHcmV?d00001\n")
    for patch in (inside, mail, binary):
        assert other_format_lines(patch) == [], patch
    for task in load_suite("quickstart").tasks + load_suite("forged").tasks:
        assert other_format_lines(task.patch) == other_format_lines(task.test_patch) == []
