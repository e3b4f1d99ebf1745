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
