"""The ``ratchet`` command line: `bench` (the benchmark and the forge), `loop` (init, run,
resume, demo and reading a run), `gc`; `common` holds what they share. Importing the
package registers every command on `app` (the console script)."""

from harness.cli import bench, loop, gc  # noqa: F401,I001  (each registers its commands, in this order)
from harness.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    app()
