"""Shared fixtures. Docker tests are marked `docker`: without a daemon they skip with the
reason, except where RATCHET_REQUIRE_DOCKER=1 (CI), where a missing daemon fails them."""

from __future__ import annotations

import os
import uuid
import warnings
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


def pytest_configure(config):
    """One owner label for every container this session makes (subprocesses and Ray nodes
    started by tests inherit it), so the suite finds its own containers, and only them, on a
    daemon shared with a user's run or another suite."""
    from benchmark import docker_host

    os.environ.setdefault(docker_host.OWNER_ENV, f"pytest-{uuid.uuid4().hex[:12]}")
    _session_temp_dir(config)


def _session_temp_dir(config) -> None:
    """Every temp file of the session, and of the commands its tests start, goes in one dir,
    removed at the end: the suite leaves nothing in the system's temp dir (tests that copy an
    agent or open a gateway in-process do not all clean up). It is named as a scratch dir of
    this process (`scratch_name`), so `ratchet gc` removes it after a killed session, but not
    entered with `Scratch.enter`: in-process tests take it for the system's temp dir, and
    make and sweep their own scratch dirs inside it. pytest's `tmp_path` dirs stay where
    pytest keeps them."""
    import shutil
    import tempfile

    from harness.loop.scratch import scratch_name

    system = tempfile.gettempdir()
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system)
    path = Path(system) / scratch_name("pytest")
    path.mkdir(mode=0o755, exist_ok=True)
    previous = (tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir = os.environ["TMPDIR"] = str(path)

    def restore() -> None:
        tempfile.tempdir = previous[0]
        if previous[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous[1]
        shutil.rmtree(path, ignore_errors=True)

    config.add_cleanup(restore)


def leftover_containers(owner: str) -> list[str]:
    """Remove this owner's containers still on the daemon; their names."""
    import docker

    from benchmark import docker_host

    client = docker.from_env(timeout=30)
    names = []
    for container in client.containers.list(all=True, ignore_removed=True,
                                            filters={"label": f"{docker_host.CONTAINER_LABEL}={owner}"}):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # its removal is under way (a Ray node's grader)
                continue
            raise
        names.append(container.name)
    return names


@pytest.fixture(autouse=True)
def _no_container_outlives_its_test(request):
    """After a Docker test, none of its containers is left to disturb the next one."""
    yield
    if "docker" not in request.keywords or _daemon_problem() is not None:
        return
    from benchmark import docker_host

    docker_host.finish_removals()  # graders remove finished containers in the background
    left = leftover_containers(os.environ[docker_host.OWNER_ENV])
    if left:
        warnings.warn(f"{request.node.nodeid} left {len(left)} container(s) running, removed: "
                      f"{', '.join(sorted(left))}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker" in item.keywords and "docker_daemon" not in item.fixturenames:
            item.fixturenames.insert(0, "docker_daemon")


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Run artifacts of a test go to its own tmp dir, never the checkout's runs/."""
    monkeypatch.setenv("RATCHET_RUNS", str(tmp_path / "runs"))
