"""The benchmark: tasks, images built without a registry, and grading by the SWE-bench rule.

Trusted code: the agent under test never sees or edits it. Public names are re-exported
here; the ``_modules`` behind them are private, and nothing outside ``benchmark/`` imports
them (``tests/test_layering.py``). Two modules are public as a whole, for the harness's
housekeeping of what ratchet left on the host: ``docker_host`` (the one module that talks
to Docker: list, label and remove containers, volumes and images) and ``processes`` (who
made a thing, and whether that process still runs).
"""

from benchmark import _docker as docker_host
from benchmark import _process as processes
from benchmark._agent_env import REPO_IN_SANDBOX, AgentRun, DockerEnvironment, Environment
from benchmark._audit import AuditResumeError, audit
from benchmark._datasets import Selection, parse_ids
from benchmark._docker import SandboxLimits, connect
from benchmark._exec_relay import ExecRelay
from benchmark._errors import (
    BenchmarkError,
    DockerUnavailable,
    ImageBuildError,
    ImageMissing,
    InfraError,
    TaskFileError,
)
from benchmark._images import (
    AGENT_RUNTIME,
    AGENT_VENV,
    RECIPE_LABEL,
    SANDBOX_USER,
    ImageBuilder,
    base_image_tag,
    env_image_tag,
    pack_directory,
    task_image_tag,
    wheel_key,
)
from benchmark._images import RECIPES as IMAGE_RECIPES
from benchmark._images import _namespace as image_namespace
from benchmark._process import start_ticks
from benchmark._grader import (
    GradeResult,
    Grader,
    GradingExecutor,
    Job,
    grade_locally,
    map_unordered,
    run_jobs,
    run_report,
)
from benchmark._grading import swebench_instance
from benchmark._scan import scan_patch
from benchmark._tripwire import plant as plant_tripwires
from benchmark._settings import cache_dir, runs_dir
from benchmark._suites import known_suites, load_suite, suite_path
from benchmark._task import (
    GitSource,
    LoadedTasks,
    LocalSource,
    PypiSource,
    TaskEnvironment,
    TaskSpec,
    load_tasks,
    read_utf8,
)
from benchmark._validate import Validity, validate_tasks

__all__ = [
    "BenchmarkError", "DockerUnavailable", "ImageBuildError", "ImageMissing", "InfraError",
    "TaskFileError", "ImageBuilder", "base_image_tag", "env_image_tag", "task_image_tag",
    "GradeResult", "Grader", "GradingExecutor", "Job", "grade_locally", "run_jobs", "run_report",
    "known_suites", "load_suite", "Selection",
    "suite_path", "GitSource", "LoadedTasks", "LocalSource", "PypiSource", "TaskEnvironment",
    "TaskSpec", "load_tasks", "Validity", "validate_tasks",
    # for the harness: sandboxes, images, settings, scans
    "AgentRun", "DockerEnvironment", "Environment", "REPO_IN_SANDBOX", "AGENT_RUNTIME", "AGENT_VENV",
    "AuditResumeError", "ExecRelay", "IMAGE_RECIPES", "RECIPE_LABEL", "SANDBOX_USER", "SandboxLimits", "audit", "cache_dir", "connect",
    "docker_host", "image_namespace", "map_unordered", "pack_directory", "parse_ids", "processes",
    "read_utf8", "runs_dir", "scan_patch", "start_ticks", "wheel_key",
    # for measurements (perf/): the official harness's instance of a task
    "swebench_instance",
    # the trip-wire tests the grader plants (the evidence hides them from the proposer)
    "plant_tripwires",
]
