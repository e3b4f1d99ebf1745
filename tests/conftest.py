"""Shared fixtures. Docker tests are marked `docker`: without a daemon they skip with the
reason, except where RATCHET_REQUIRE_DOCKER=1 (CI), where a missing daemon fails them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "benchmark" / "data"


def _daemon_problem() -> str | None:
    try:
        import docker

        docker.from_env(timeout=10).ping()
        return None
    except Exception as exc:  # any failure means "no usable daemon"; the reason is shown
        return f"no Docker daemon answers: {str(exc).splitlines()[0][:160]}"


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    problem = _daemon_problem()
    if problem is None:
        return
    if os.environ.get("RATCHET_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{problem} (RATCHET_REQUIRE_DOCKER=1: Docker tests may not skip)")
    pytest.skip(problem)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker" in item.keywords and "docker_daemon" not in item.fixturenames:
            item.fixturenames.insert(0, "docker_daemon")


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Run artifacts of a test go to its own tmp dir, never the checkout's runs/."""
    monkeypatch.setenv("RATCHET_RUNS", str(tmp_path / "runs"))
