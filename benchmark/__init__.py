"""The benchmark: tasks, images built without a registry, and grading by the SWE-bench rule.

Trusted code: the agent under test never sees or edits it. Public names are re-exported
here; the ``_modules`` behind them are private.
"""

from benchmark._datasets import Selection
from benchmark._errors import (
    BenchmarkError,
    DockerUnavailable,
    ImageBuildError,
    ImageMissing,
    InfraError,
    TaskFileError,
)
from benchmark._images import ImageBuilder, base_image_tag, env_image_tag, task_image_tag
from benchmark._runner import (
    GradeResult,
    Grader,
    GradingExecutor,
    Job,
    grade_locally,
    run_jobs,
    run_report,
)
from benchmark._suites import known_suites, load_suite, suite_path
from benchmark._task import (
    GitSource,
    LoadedTasks,
    LocalSource,
    PypiSource,
    TaskEnvironment,
    TaskSpec,
    load_tasks,
)
from benchmark._validate import Validity, validate_tasks

__all__ = [
    "BenchmarkError", "DockerUnavailable", "ImageBuildError", "ImageMissing", "InfraError",
    "TaskFileError", "ImageBuilder", "base_image_tag", "env_image_tag", "task_image_tag",
    "GradeResult", "Grader", "GradingExecutor", "Job", "grade_locally", "run_jobs", "run_report",
    "known_suites", "load_suite", "Selection",
    "suite_path", "GitSource", "LoadedTasks", "LocalSource", "PypiSource", "TaskEnvironment",
    "TaskSpec", "load_tasks", "Validity", "validate_tasks",
]
