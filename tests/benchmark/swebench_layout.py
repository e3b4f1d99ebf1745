"""An image laid out like an official SWE-bench eval image, built here with no registry or conda.

The official images (swebench's Dockerfiles) hold the repository at ``/testbed`` (root-owned,
a git repository whose HEAD is the row's ``base_commit``, the package installed editable),
``python3`` on the system, and ``/opt/miniconda3`` with a ``testbed`` environment that every
eval script enters with ``source /opt/miniconda3/bin/activate`` then ``conda activate testbed``.

Built here instead: ratchet's Debian base image (the only OS image this machine has; the
official ones are Ubuntu), a venv at ``/opt/miniconda3/envs/testbed`` and, at
``/opt/miniconda3/bin/activate``, a **test shim, not conda** (labelled so in the file and in
the image's ``org.ratchet.test-shim`` label) whose ``conda activate NAME`` puts that env's
``bin`` first on PATH. No sandbox user, no ``/opt/venv``, no ``/opt/ratchet``: nothing of
ratchet's own layers.

The repository is the quickstart suite's isodate task (its pinned sdist, fetched offline from
ratchet's cache like every suite source, with the task's setup patch as the base), and the
official-format row for it is ``tests/benchmark/data/swebench_official.jsonl``: the official
dataset's twelve fields only.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from benchmark import _docker
from benchmark._images import ImageBuilder
from benchmark._settings import cache_dir
from benchmark._task import TaskSpec, load_tasks

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "benchmark" / "suites" / "quickstart.jsonl"
OFFICIAL_ROWS = ROOT / "tests" / "benchmark" / "data" / "swebench_official.jsonl"
SOURCE_TASK = "isodate__isodate-0.7.2__leap-century-month-add"
SHIM_LABEL = "org.ratchet.test-shim"
ENV = "/opt/miniconda3/envs/testbed"
_SHIM = """\
# ratchet TEST SHIM -- NOT conda. Stands in for /opt/miniconda3/bin/activate of the official
# SWE-bench eval images, so their eval scripts run unchanged on an image built offline:
# `conda activate NAME` puts /opt/miniconda3/envs/NAME/bin first on PATH, and nothing more.
conda() {
  if [ "${1:-}" = activate ] && [ -d "/opt/miniconda3/envs/${2:-}" ]; then
    export CONDA_DEFAULT_ENV="$2" CONDA_PREFIX="/opt/miniconda3/envs/$2"
    export PATH="/opt/miniconda3/envs/$2/bin:$PATH"
  else
    echo "ratchet conda shim: only 'conda activate ENV' is supported" >&2
    return 1
  fi
}
"""
_GIT_ID = ("GIT_AUTHOR_NAME=upstream GIT_AUTHOR_EMAIL=upstream@example.org "
           "GIT_COMMITTER_NAME=upstream GIT_COMMITTER_EMAIL=upstream@example.org "
           "GIT_AUTHOR_DATE=2024-09-01T00:00:00+0000 GIT_COMMITTER_DATE=2024-09-01T00:00:00+0000")


def source_task() -> TaskSpec:
    return next(t for t in load_tasks(QUICKSTART).tasks if t.instance_id == SOURCE_TASK)


def official_rows() -> list[dict]:
    return [json.loads(line) for line in OFFICIAL_ROWS.read_text().splitlines() if line.strip()]


def build_layout_image(builder: ImageBuilder | None = None) -> tuple[str, str]:
    """(image id tag, HEAD commit of /testbed): built once per recipe, kept across runs."""
    builder = builder or ImageBuilder()
    task = source_task()
    assert task.environment is not None and task.source is not None
    base = builder.ensure_base()
    recipe = hashlib.sha256(json.dumps([base, _SHIM, _GIT_ID, task.source.model_dump(),
                                        task.environment.python_deps]).encode()).hexdigest()[:12]
    tag = f"ratchet-test/swebench-layout:{recipe}"
    if not _docker.image_exists(tag):
        tree, requires = builder.inputs.source(task)
        deps = builder.wheelhouse(list(task.environment.python_deps))
        build = builder.wheelhouse(requires)
        script = f"""set -euo pipefail
python3 -m venv {ENV}
{ENV}/bin/pip install -q --no-index --disable-pip-version-check --find-links /wheels {shlex.join(task.environment.python_deps)}
mkdir -p /opt/miniconda3/bin
cp /ratchet-build/activate /opt/miniconda3/bin/activate
cd /testbed
git apply --whitespace=nowarn /ratchet-build/setup.patch
rm -rf /ratchet-build
git init -q
printf '__pycache__/\\n*.py[cod]\\n*.egg-info/\\n' >> .git/info/exclude
find . -name __pycache__ -prune -exec rm -rf {{}} +
git add -A
env {_GIT_ID} git commit -q --no-verify -m "upstream base"
PIP_NO_INDEX=1 PIP_FIND_LINKS="/wheels /build-wheels" {ENV}/bin/pip install -q --disable-pip-version-check -e .
git status --porcelain | grep . && {{ echo "the install left tracked changes"; exit 3; }} || true
chown -R root:root /testbed
"""
        _docker.commit_script(
            base, script, tag=tag, log_path=cache_dir() / "logs" / "build" / "swebench-layout.log",
            archives=[("/", tree), ("/", _docker.make_tar({
                "ratchet-build/setup.patch": task.source.setup_patch,
                "ratchet-build/activate": _SHIM}))],
            volumes={str(deps): {"bind": "/wheels", "mode": "ro"},
                     str(build): {"bind": "/build-wheels", "mode": "ro"}},
            changes=["WORKDIR /testbed", f"LABEL {SHIM_LABEL}=conda-activate-shim-not-conda"])
    head = _docker.connect().containers.run(
        tag, ["git", "-C", "/testbed", "rev-parse", "HEAD"], remove=True, network_mode="none",
        labels={_docker.CONTAINER_LABEL: _docker.owner()}).decode().strip()
    return tag, head
