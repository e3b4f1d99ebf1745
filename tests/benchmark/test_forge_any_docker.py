"""`ratchet forge` on a package it has no recipe for, with no options: dependencies, build
backend, test paths and pytest are found from the sdist, the tasks validate and record how
they were made; a baseline that cannot run stops the forge before any screening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import ImageBuilder, load_tasks
from benchmark._sources import TREE_TIME
from benchmark.forge import RECIPES
from tests.benchmark.test_image_metadata_docker import _listing

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
UNSEEN = "itsdangerous==2.2.0"
"""flit-built, tests under tests/ with its testpaths in pyproject.toml; named by no recipe,
no shipped suite and no other test."""


def _forge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RATCHET_RUNS": str(tmp_path / "runs")}
    return subprocess.run([str(Path(sys.executable).parent / "ratchet"), "forge", *args],
                          capture_output=True, text=True, env=env, timeout=900, check=False, cwd=ROOT)


def test_plain_forge_of_an_unseen_package_validates_and_records_its_recipe(tmp_path):
    """The plain command (package, count, out: nothing else) forges a valid task from a
    package with no built-in recipe; the task pins its whole environment and records what
    was detected; its image shows no file newer than its siblings."""
    assert UNSEEN not in RECIPES
    out = tmp_path / "forged.jsonl"
    result = _forge(tmp_path, "--package", UNSEEN, "--count", "1", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded = load_tasks(out)
    assert not loaded.problems and len(loaded.tasks) == 1
    task = loaded.tasks[0]
    recipe = task.model_extra["forge"]["recipe"]
    assert recipe["pytest"] == "9.2.0" and recipe["test_paths"] == "tests"
    assert any("build backend: flit_core" in line for line in recipe["detected"])
    assert all("==" in dep for dep in task.environment.python_deps)
    assert "pytest==9.2.0" in task.environment.python_deps
    entries = _listing(ImageBuilder(), task)
    assert {when for when, _, _ in entries.values()} == {float(TREE_TIME)}
    report = json.loads(next((tmp_path / "runs" / "bench").glob("forge-*/forge_report.json")).read_text())
    assert report[0]["kept"] == 1 and report[0]["stable_tests"] > 0


def test_a_baseline_that_cannot_run_stops_before_screening_and_keeps_its_log(tmp_path):
    """A wrong test path: the forge stops after the baseline (no mutation screened, nothing
    written), names the cause and fix, and keeps the baseline's pytest output."""
    out = tmp_path / "forged.jsonl"
    result = _forge(tmp_path, "--package", "inflection==0.5.1", "--test-paths", "nowhere",
                    "--count", "1", "--out", str(out))
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nothing was screened" in text and "'nowhere' is not in the sdist" in text
    assert "screening" not in text
    assert not out.exists()
    logs = list((tmp_path / "runs" / "bench").glob("forge-*/baseline.log"))
    assert logs and "file or directory not found: nowhere" in logs[0].read_text()


def test_a_conftest_that_pytest_9_rejects_falls_back_to_an_older_pytest(tmp_path):
    """docopt-ng's conftest declares a py.path hook argument, which pytest 9 refuses
    (PluginValidationError). Pinned to 9.2.0 the baseline stops naming the conftest; left
    to the default, the forge retries with 8.4.2, gets a baseline and records the change."""
    from benchmark import Grader
    from benchmark.forge import Forge, PackageRecipe
    from benchmark.forge.baseline import BaselineError

    grader = Grader(ImageBuilder(), tmp_path)
    pinned = Forge(PackageRecipe("docopt-ng==0.9.0", pytest_version="9.2.0"), grader)
    with pytest.raises(BaselineError, match="conftest.py or plugin fails under this pytest"):
        pinned.pristine_baseline()
    assert "PluginValidationError" in (tmp_path / "baseline.log").read_text()
    forge = Forge(PackageRecipe("docopt-ng==0.9.0"), grader)
    _image, (stable, _flaky) = forge.pristine_baseline()
    assert stable
    assert forge.recipe.pytest == "8.4.2" and "pytest==8.4.2" in forge.recipe.python_deps()
    assert any("pytest 8.4.2: pytest 9.2.0 failed its baseline" in d for d in forge.recipe.detected)
