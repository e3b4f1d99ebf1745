"""Forging any package: what the forge reads from an sdist (requirements, build backend,
native parts, test layout, pytest options), how it pins dependencies, and what it says
when a baseline cannot run. Sdists are small dicts of files here; resolution and sdist
look-ups use the real package index through pip."""

from __future__ import annotations

import zipfile

import pytest

from benchmark import InfraError
from benchmark._sources import build_requires, download_sdist
from benchmark.forge.baseline import baseline_error, likely_cause, needs_older_pytest
from benchmark.forge.forge import PYTEST_DEPS, RECIPES, PackageRecipe, complete_recipe
from benchmark.forge.packages import (
    DEFAULT_PYTEST,
    ForgeInputError,
    detect_tests,
    pytest_plugins_in,
    read_facts,
    resolve_deps,
    tidy_addopts,
)

PKG_INFO = b"""Metadata-Version: 2.4
Name: demo
Version: 1.0
Requires-Dist: attrs>=22
Requires-Dist: tomli; python_version < "3.11"
Provides-Extra: test
Requires-Dist: freezegun; extra == "test"
Requires-Dist: pytest-cov; extra == "test"
Provides-Extra: docs
Requires-Dist: sphinx; extra == "docs"
"""


def test_requirements_come_from_pkg_info_with_test_extras_apart():
    """Runtime requirements keep their markers; a test extra's requirements are test
    requirements (marker stripped); other extras (docs) are not installed."""
    facts = read_facts("demo==1.0", {"PKG-INFO": PKG_INFO, "demo/__init__.py": b""})
    assert facts.requires == ("attrs>=22", 'tomli; python_version < "3.11"')
    assert facts.test_requires == ("freezegun", "pytest-cov")
    assert facts.native == ()
    assert facts.backend == "setuptools.build_meta:__legacy__"


def test_requirements_from_egg_info_and_pyproject_when_pkg_info_lists_none():
    """Old setuptools sdists list requirements only in egg-info/requires.txt (sections for
    markers and extras); a pyproject's dependency-groups hold test requirements too."""
    egg = {"PKG-INFO": b"Metadata-Version: 1.2\nName: old\nVersion: 2\n",
           "old.egg-info/requires.txt": b"six\n\n[:python_version < \"3.8\"]\nimportlib-metadata\n"
                                        b"\n[testing]\nmock\n"}
    facts = read_facts("old==2", egg)
    assert facts.requires == ("six", 'importlib-metadata; python_version < "3.8"')
    assert facts.test_requires == ("mock",)
    modern = {"pyproject.toml": b'[project]\nname="m"\ndependencies=["idna>=3"]\n'
                                b'[dependency-groups]\ntests=["hypothesis", {include-group="x"}]\n'
                                b'[build-system]\nrequires=["hatchling"]\nbuild-backend="hatchling.build"\n'}
    facts = read_facts("m==1", modern)
    assert facts.requires == ("idna>=3",) and facts.test_requires == ("hypothesis",)
    assert facts.backend == "hatchling.build"


@pytest.mark.parametrize("files, reason", [
    ({"setup.py": b"from setuptools import Extension, setup\nsetup(ext_modules=[Extension('x', ['x.c'])])"},
     "C extensions"),
    ({"src/speedups.c": b"int x;", "pkg/__init__.py": b""}, "compiled-language sources"),
    ({"pyproject.toml": b'[build-system]\nrequires=["maturin>=1"]\nbuild-backend="maturin"\n'},
     "maturin"),
])
def test_a_package_that_compiles_code_is_refused_by_name(files, reason):
    """A package with C/Rust parts is not pure Python: one error naming why and the fix,
    before anything is built."""
    facts = read_facts("fast==1", files)
    assert any(reason in r for r in facts.native)
    with pytest.raises(ForgeInputError, match=r"fast==1 is not a pure-Python package .*Pick a pure-Python"):
        complete_recipe(PackageRecipe("fast==1"), files)


def test_build_requires_adds_what_an_editable_install_asks_for():
    """Offline, an editable install of a hatchling package needs `editables` in the
    wheelhouse (its get_requires_for_build_editable asks for it); flit needs nothing more."""
    def pyproject(requires: str, backend: str) -> dict[str, bytes]:
        return {"pyproject.toml": f'[build-system]\nrequires=[{requires}]\nbuild-backend="{backend}"\n'.encode()}

    assert build_requires(pyproject('"hatchling"', "hatchling.build")) == ["hatchling", "editables"]
    assert build_requires(pyproject('"pdm-backend"', "pdm.backend")) == ["pdm-backend", "editables"]
    assert build_requires(pyproject('"setuptools>=61"', "setuptools.build_meta")) == ["setuptools>=61", "wheel"]
    assert build_requires(pyproject('"flit_core<4"', "flit_core.buildapi")) == ["flit_core<4"]
    assert build_requires({}) == ["setuptools>=40.8.0", "wheel"]


def test_test_paths_found_in_the_usual_places():
    """tests/ or test/ directories with test files, a package's own tests dir, root test
    modules; a tests.py is collected with python_files (pytest's default skips it)."""
    assert detect_tests({"tests/test_a.py": b"", "pkg/a.py": b""}, "pkg").test_paths == "tests"
    assert detect_tests({"test/test_a.py": b""}, "pkg").test_paths == "test"
    assert detect_tests({"my_pkg/tests/test_a.py": b""}, "my-pkg").test_paths == "my_pkg/tests"
    assert detect_tests({"test_pkg.py": b"", "pkg.py": b""}, "pkg").test_paths == "test_pkg.py"
    layout = detect_tests({"tests.py": b"", "jsonp.py": b""}, "jsonp")
    assert layout.test_paths == "tests.py"
    assert layout.test_opts == "-o 'python_files=test_*.py *_test.py tests.py test.py'"
    assert detect_tests({"tests/README": b"", "docs/test_x.py": b"", "tests/unit/test_a.py": b""},
                        "p").test_paths == "tests"


def test_the_packages_own_testpaths_and_addopts_are_read():
    """testpaths that exist in the sdist are used; addopts are kept except what only
    reports (coverage, colour), needs an absent plugin (xdist) or turns library modules
    into tests (doctest-modules)."""
    files = {"pyproject.toml": b'[tool.pytest.ini_options]\ntestpaths=["t"]\n'
                               b'addopts="--cov=pkg -n auto --strict-markers --doctest-modules --color=yes"\n',
             "t/test_x.py": b""}
    layout = detect_tests(files, "pkg")
    assert layout.test_paths == "t"
    assert layout.test_opts == "-o addopts=--strict-markers"
    assert any("pyproject.toml" in note for note in layout.notes)
    setup_cfg = {"setup.cfg": b"[tool:pytest]\ntestpaths = missing\naddopts = -ra\n",
                 "tests/test_y.py": b""}
    layout = detect_tests(setup_cfg, "pkg")
    assert (layout.test_paths, layout.test_opts) == ("tests", "")


def test_tidy_addopts_drops_reporting_and_unknown_options():
    kept, dropped = tidy_addopts("-ra --cov pkg --cov-report=term -n 4 -p xdist -p no:warnings "
                                 "--import-mode=importlib -W error -x --weird")
    assert kept == "-ra -p no:warnings --import-mode=importlib -W error"
    assert dropped == ["--cov", "pkg", "--cov-report=term", "-n", "4", "-p", "xdist", "-x", "--weird"]


def test_a_sdist_without_tests_is_one_clear_error():
    with pytest.raises(ForgeInputError, match=r"ships no pytest tests.*--test-paths"):
        detect_tests({"pkg/__init__.py": b"", "README.md": b""}, "pkg")


def test_given_options_are_kept_and_built_in_recipes_are_not_resolved():
    """A user's --test-paths/--test-opts win over detection; the built-in recipes keep
    their measured environments (pytest pins plus their deps, nothing resolved)."""
    files = {"tests/test_a.py": b"", "pkg/__init__.py": b""}
    given = complete_recipe(PackageRecipe("pkg==1", test_paths="elsewhere", test_opts="-q",
                                          resolve=False), files)
    assert (given.test_paths, given.test_opts) == ("elsewhere", "-q")
    slugify = RECIPES["python-slugify==9.2.0"]
    assert complete_recipe(slugify, {"slugify/a.py": b""}).python_deps() == PYTEST_DEPS + ("text-unidecode==1.3",)


def test_dependencies_are_resolved_and_pinned_with_pytest():
    """glom's runtime requirements (attrs, boltons, face) come out pinned together with the
    quickstart's pytest pins; the package itself is not among them (installed editable)."""
    facts = read_facts("glom==25.12.0", {"PKG-INFO": b"Metadata-Version: 2.1\nName: glom\nVersion: 25.12.0\n"
                                                     b"Requires-Dist: boltons>=19.3.0\nRequires-Dist: attrs\n"
                                                     b"Requires-Dist: face>=20.1.1\n"})
    pins, notes = resolve_deps(facts, DEFAULT_PYTEST)
    names = {p.split("==")[0].lower() for p in pins}
    assert {"attrs", "boltons", "face", "pytest", "pluggy"} <= names and "glom" not in names
    assert set(PYTEST_DEPS) <= set(pins)
    assert all("==" in p for p in pins)
    assert any("boltons" in n for n in notes)
    older, _ = resolve_deps(facts, "8.4.2")
    assert "pytest==8.4.2" in older


def test_unresolvable_dependencies_name_the_options_to_fix_them():
    facts = read_facts("x==1", {"PKG-INFO": b"Metadata-Version: 2.1\nName: x\nVersion: 1\n"
                                           b"Requires-Dist: no-such-dist-ratchet-zz>=1\n"})
    with pytest.raises(ForgeInputError, match=r"do not resolve.*--deps"):
        resolve_deps(facts, DEFAULT_PYTEST)


def test_an_unknown_package_or_release_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("RATCHET_CACHE", str(tmp_path))
    with pytest.raises(InfraError, match=r"PyPI has no sdist of 'no-such-dist-ratchet-zz'"):
        download_sdist("no-such-dist-ratchet-zz==1.0")
    with pytest.raises(InfraError, match=r"glom has no release '99.0' with an sdist; recent releases"):
        download_sdist("glom==99.0")


def test_pytest_plugins_are_read_from_the_pinned_wheels(tmp_path):
    """Grading loads plugins only by name (-p), so the forge names those its pins bring."""
    with zipfile.ZipFile(tmp_path / "pytest_demo-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("pytest_demo-1.0.dist-info/entry_points.txt",
                       "[pytest11]\ndemo = pytest_demo.plugin\n[console_scripts]\nx = y:z\n")
    with zipfile.ZipFile(tmp_path / "other-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("other-1.0.dist-info/entry_points.txt", "[pytest11]\no = other.p\n")
    assert pytest_plugins_in(tmp_path, ("pytest-demo==1.0",)) == ("pytest_demo.plugin",)


@pytest.mark.parametrize("output, cause", [
    ("ImportError while importing test module\nE   ModuleNotFoundError: No module named 'yaml'\n",
     "'yaml', which is not installed: add its distribution pinned with --deps"),
    ("ERROR: usage: __main__.py [options]\n__main__.py: error: unrecognized arguments: --cov\n",
     '--test-opts "-o addopts="'),
    ("ERROR: file or directory not found: nowhere\n\nno tests ran in 0.01s\n", "not in the sdist"),
    ("============ no tests ran in 0.02s ============\n>>>>> FORGE EXIT 0 5\n", "--test-paths"),
    ("ImportError while loading conftest '/testbed/conftest.py'.\n", "--pytest-version"),
])
def test_a_failed_baseline_names_its_likely_cause(output, cause):
    assert cause in likely_cause(output, "tests", 600)


def test_the_baseline_error_carries_the_tail_and_the_log(tmp_path):
    output = "\n".join(f"line {i}" for i in range(100)) + "\nE   ModuleNotFoundError: No module named 'yaml'\n"
    error = baseline_error("pkg==1", output, "no test passed", tmp_path / "baseline.log", "tests", 600)
    text = str(error)
    assert "nothing was screened" in text and str(tmp_path / "baseline.log") in text
    assert "line 99" in text and "line 10\n" not in text
    assert needs_older_pytest("ImportError while loading conftest '/testbed/conftest.py'")
    assert not needs_older_pytest("E   ModuleNotFoundError: No module named 'yaml'")


def test_recipe_record_says_what_was_detected():
    recipe = complete_recipe(PackageRecipe("pkg==1", resolve=False),
                             {"tests/test_a.py": b"", "pkg/__init__.py": b""})
    record = recipe.record()
    assert record["pytest"] == DEFAULT_PYTEST and record["test_paths"] == "tests"
    assert record["detected"] == ["test paths found: tests"]


def test_a_doctest_of_a_library_module_never_becomes_a_hidden_test():
    """With the filter off, a doctest broken by a mutation of pkg/mod.py would be a
    FAIL_TO_PASS test whose "test file" is the mutated module itself (deleted from the
    agent's tree, re-created bug-free by the test patch); the filter keeps only tests of
    test files."""
    from benchmark.forge.forge import Forge, usable_statuses

    statuses = {"pkg/mod.py::pkg.mod.clamp": "PASSED", "tests/test_mod.py::test_clamp": "PASSED",
                "tests/test_mod.py::test_x[a": "PASSED", "tests/test_mod.py::test_other": "PASSED"}
    unfiltered = {t for t, s in statuses.items() if s == "PASSED"}
    mutant_run = {"pkg/mod.py::pkg.mod.clamp": "FAILED", "tests/test_mod.py::test_clamp": "FAILED",
                  "tests/test_mod.py::test_other": "PASSED"}  # the keep rule: one still passes
    mutation = object()
    leaky = Forge._judge(mutation, unfiltered, _summary(mutant_run))
    assert leaky is not None and "pkg/mod.py::pkg.mod.clamp" in leaky.fail_to_pass
    stable = set(usable_statuses(statuses, ["tests/test_mod.py::test_x[a"]))
    assert stable == {"tests/test_mod.py::test_clamp", "tests/test_mod.py::test_other"}
    judged = Forge._judge(mutation, stable, _summary(mutant_run))
    assert judged is not None and judged.fail_to_pass == ["tests/test_mod.py::test_clamp"]


def _summary(statuses: dict[str, str]) -> str:
    """A pytest -rA log of these statuses, as the forge's runs print it."""
    lines = [f"{s} {t}" + (" - AssertionError" if s == "FAILED" else "") for t, s in statuses.items()]
    failed = sum(s == "FAILED" for s in statuses.values())
    passed = sum(s == "PASSED" for s in statuses.values())
    counts = ", ".join([f"{failed} failed", *([f"{passed} passed"] if passed else [])])
    return ("============================= test session starts ==============================\n"
            "=========================== short test summary info ============================\n"
            + "\n".join(lines) + f"\n========================= {counts} in 0.10s =========================\n")


def test_screening_limit_follows_the_baseline():
    from benchmark.forge.forge import screening_timeout

    fast = "===== 526 passed, 2 xfailed in 3.00s =====\n"
    slow = "===== 12 passed in 75.21s (0:01:15) =====\n"
    assert screening_timeout([fast, fast]) == 35
    assert screening_timeout([fast, slow]) == 396
    assert screening_timeout(["no summary"]) == 170


@pytest.mark.parametrize("package, message", [
    ("wcwidth==0.9.4", "is not a pure-Python package"),
    ("sortedcontainers==2.4.0", "ships no pytest tests"),
    ("no-such-dist-ratchet-zz==1.0", "PyPI has no sdist"),
])
def test_bad_packages_fail_the_command_before_anything_is_built(tmp_path, package, message):
    """The plain command on a package that cannot be forged: one error naming the fix,
    exit 2, no task file, no image."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ratchet"), "forge", "--package", package,
         "--count", "1", "--out", str(out)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "RATCHET_CACHE": str(tmp_path / "cache")}, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join((result.stdout + result.stderr).split())
    assert "building" not in result.stdout and not out.exists()


def test_test_requirements_from_a_requirements_file_by_name():
    """itsdangerous declares its test deps only in requirements/tests.in (a pip-compiled
    tests.txt beside it pins pytest's own deps): names are taken, versions left to the resolver."""
    files = {"requirements/tests.in": b"pytest\nfreezegun\n",
             "requirements/tests.txt": b"freezegun==1.4.0\n    # via -r tests.in\niniconfig==2.0.0\n"}
    assert read_facts("x==1", files).test_requires == ("pytest", "freezegun")
    pinned = {"test-requirements.txt": b"-r base.txt\nfreezegun==1.4.0  # time\niniconfig==2.0.0\n"}
    assert read_facts("x==1", pinned).test_requires == ("freezegun", "iniconfig")
