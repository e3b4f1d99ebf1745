"""One exception tree for the benchmark.

    BenchmarkError
    ├── TaskFileError        a task file or one of its instances is malformed
    └── InfraError           the machinery failed, not the agent: retry, never score
        ├── DockerUnavailable    no daemon answers
        ├── ImageMissing         a task's image is absent and cannot be built here
        │   └── OfficialImageMissing   an official SWE-bench image absent, no registry gave it
        └── ImageBuildError      building an image failed (its log is named)

A patch that does not apply is *not* an error: it is the agent's failure, graded as such.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BenchmarkError",
    "TaskFileError",
    "InfraError",
    "DockerUnavailable",
    "ImageMissing",
    "OfficialImageMissing",
    "ImageBuildError",
]


class BenchmarkError(Exception):
    """Base of every error the benchmark raises on purpose."""


class TaskFileError(BenchmarkError):
    """Names the file, the instance and the field, so the fix is one edit away."""

    def __init__(self, path: Path | str, instance: str | None, field: str | None, message: str):
        self.path = Path(path)
        self.instance = instance
        self.field = field
        self.message = message
        where = str(self.path)
        if instance:
            where += f", instance {instance}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class InfraError(BenchmarkError):
    """The harness, not the agent, failed; the task is recorded as an error and retried."""


class DockerUnavailable(InfraError):
    def __init__(self, detail: str):
        super().__init__(
            f"no Docker daemon answers ({detail}). Start one (as root: `dockerd &`, or "
            "`systemctl start docker`) or set DOCKER_HOST, then run the command again."
        )


class ImageMissing(InfraError):
    def __init__(self, image: str, instance: str):
        super().__init__(
            f"image {image!r} for task {instance} is not present and ratchet cannot build it "
            "(the task names a prebuilt image). Load or pull it (`docker load -i FILE` / "
            "`docker pull`), or give the task a 'source' and 'environment' to build from."
        )


class OfficialImageMissing(ImageMissing):
    """An official SWE-bench eval image is absent here and no registry gave it."""

    def __init__(self, image: str, instance: str, reason: str):
        InfraError.__init__(
            self,
            f"image {image!r} for task {instance} is not present and could not be pulled "
            f"({reason}). Fix one of: (1) give a registry that has it: `docker login` for Docker "
            "Hub, or point RATCHET_SWEBENCH_NAMESPACE at a mirror or a local registry (e.g. "
            "localhost:5000/swebench); or (2) build it with swebench's own image builder "
            "(`python -m swebench.harness.prepare_images` / `run_evaluation --task-repo`) under "
            "that name, or `docker load -i FILE` a saved copy.")


class ImageBuildError(InfraError):
    def __init__(self, what: str, log: Path, detail: str = ""):
        self.log = log
        tail = f": {detail}" if detail else ""
        super().__init__(f"building {what} failed{tail}. Full log: {log}")
