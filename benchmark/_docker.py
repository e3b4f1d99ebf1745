"""The one module that talks to Docker.

Everything else hands it data (an image, a script, files to copy in) and gets data back
(an exit code and a log). Docker and network failures are translated here into
`InfraError`s that name the fix; they are never mistaken for an agent's failure.
"""

from __future__ import annotations

import atexit
import io
import os
import queue
import socket
import tarfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import docker
import docker.errors
import docker.types
import requests.exceptions

from benchmark import _process
from benchmark._errors import DockerUnavailable, ImageBuildError, InfraError

__all__ = [
    "CONTAINER_LABEL",
    "OWNER_ENV",
    "PROCESS_LABEL",
    "RUN_LABEL",
    "WORKSPACE_LABEL",
    "label_run",
    "owner",
    "remove_process_containers",
    "ContainerInfo",
    "list_containers",
    "dangling_volumes",
    "list_images",
    "remove_by_id",
    "LOG_CONFIG",
    "LOG_READ_LIMIT",
    "ExecResult",
    "RunResult",
    "Sandbox",
    "SandboxLimits",
    "commit_script",
    "connect",
    "image_exists",
    "import_rootfs",
    "make_tar",
    "remove_quietly",
    "finish_removals",
    "run_grading",
    "run_script",
    "sandbox",
    "start_grading_container",
    "WaitingGrading",
]

LOG_CONFIG = docker.types.LogConfig(type="json-file", config={"max-size": "8m", "max-file": "2"})
"""The log driver's cap for every sandbox: what the code inside prints (to its stdout, or to
``/proc/1/fd/1``) can take at most 16 MB of the host's disk, whatever it writes."""
LOG_READ_LIMIT = 16 * 1024 * 1024
"""The most of a container's log the harness reads back (its tail): memory stays bounded."""

_local = threading.local()

CONTAINER_LABEL = "org.ratchet.sandbox"
"""Every container ratchet makes carries this label (value: the owner, see OWNER_ENV), so
its own containers can be found on a daemon shared with anything else."""
OWNER_ENV = "RATCHET_CONTAINER_OWNER"
"""Who made a container (the label's value); the test suite sets one per session."""


PROCESS_LABEL = "org.ratchet.process"
"""``host:pid:start`` of the process that made the container (`benchmark._process`): a
container whose maker is dead is garbage (`harness.leftovers` sweeps it)."""
RUN_LABEL = "org.ratchet.run"
WORKSPACE_LABEL = "org.ratchet.workspace"
"""The run (and its workspace) a container works for, when the process drives a run."""
_run_labels: dict[str, str] = {}


def owner() -> str:
    return os.environ.get(OWNER_ENV, "ratchet")


def label_run(run: str | None, workspace: str | None = None) -> None:
    """Label every container this process makes from now on with `run` (None: no run)."""
    _run_labels.clear()
    if run:
        _run_labels.update({RUN_LABEL: run, WORKSPACE_LABEL: workspace or ""})


def _labels() -> dict[str, str]:
    return {CONTAINER_LABEL: owner(), PROCESS_LABEL: _process.identity(), **_run_labels}


_NOT_INHERITED = [f'LABEL {PROCESS_LABEL}="" {RUN_LABEL}="" {WORKSPACE_LABEL}=""']
"""A committed image would pass its build container's maker and run on to every container
made of it (by any tool): they are blanked in the image."""


def remove_process_containers(ident: str | None = None) -> int:
    """Remove (with their volumes) every container the process `ident` (default: this one)
    made: a second Ctrl-C stops the tasks in flight at once. Quiet: without a daemon it
    removes nothing. The count removed."""
    try:
        found = connect().containers.list(all=True, ignore_removed=True, filters={
            "label": [f"{CONTAINER_LABEL}={owner()}", f"{PROCESS_LABEL}={ident or _process.identity()}"]})
    except (InfraError, docker.errors.DockerException, requests.exceptions.RequestException):
        return 0
    for container in found:
        remove_quietly(container)
    return len(found)


def connect() -> docker.DockerClient:
    """A client for this thread (the SDK's session is not shared across threads)."""
    client = getattr(_local, "client", None)
    if client is None:
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(str(exc).splitlines()[0][:200]) from exc
        _local.client = client
    return client


def image_exists(tag: str) -> bool:
    try:
        connect().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise InfraError(f"Docker could not look up image {tag!r}: {exc}") from exc


class PullFailed(Exception):
    """No registry gave the image (unreachable, unknown name, denied): `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def pull_image(name: str, on_progress: Callable[[str], None] = lambda message: None) -> None:
    """Pull `name` (``REPO:TAG``) with the Docker SDK, reporting progress per layer about
    every 10%; raises PullFailed with the registry's or the daemon's reason."""
    repository, _, tag = name.rpartition(":")
    if "/" in tag or not repository:  # a port, not a tag: ``host:5000/name``
        repository, tag = name, "latest"
    api = connect().api
    shown: dict[str, int] = {}
    try:
        for event in api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise PullFailed(str(event["error"]))
            detail = event.get("progressDetail") or {}
            layer, total = event.get("id", ""), detail.get("total") or 0
            if total and layer:
                tenth = int(10 * (detail.get("current") or 0) / total)
                if tenth > shown.get(layer, -1):
                    shown[layer] = tenth
                    on_progress(f"pulling {name}: layer {layer} {10 * tenth}% of {total >> 20} MB")
            elif event.get("status", "").startswith(("Status:", "Digest:")):
                on_progress(f"pulled {name}: {event['status']}")
    except docker.errors.APIError as exc:
        raise PullFailed(str(exc.explanation or exc)) from None
    except docker.errors.DockerException as exc:
        raise PullFailed(str(exc)) from None


def make_tar(files: dict[str, bytes | str], *, mode: int = 0o644) -> bytes:
    """An in-memory tar of `files` (path -> content), owned by root, for put_archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one container; the defaults suit a pytest suite of seconds."""

    memory: str = "4g"
    pids: int = 1024
    cpus: float = 2.0
    output_bytes: int = 16 << 20
    """Test output kept per grading; past it the output is dropped and the run unresolved."""


@dataclass
class RunResult:
    exit_code: int
    log: str
    timed_out: bool
    seconds: float


def _hardened(limits: SandboxLimits) -> dict:
    return dict(
        network_mode="none",
        init=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.pids,
        mem_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9),
        log_config=LOG_CONFIG,
    )


def hardened_options(limits: SandboxLimits) -> dict:
    """The docker SDK options every sandbox container is started with (no network, docker's
    init, no capabilities, the limits): for a measurement that starts a container of its own."""
    return _hardened(limits)


def _wait(container, timeout_s: float) -> tuple[int, bool]:
    """(exit code, timed out). Past the limit the container is killed."""
    started = time.monotonic()
    try:
        return container.wait(timeout=timeout_s)["StatusCode"], False
    except requests.exceptions.RequestException:
        if time.monotonic() - started < timeout_s * 0.9:
            raise
        container.kill()
        return -1, True



def _capped(raw: bytes, limit: int = LOG_READ_LIMIT) -> str:
    """A log as text, at most `limit` bytes of its end (the verdict is read from the end)."""
    if len(raw) > limit:
        raw = b"[ratchet: the log was cut to its last %d bytes]\n" % limit + raw[-limit:]
    return raw.decode("utf-8", "replace")


_SCRIPT_IN_CONTAINER = "/ratchet-run.sh"


def _with_script(archives: Iterable[tuple[str, bytes]], script: str) -> list[tuple[str, bytes]]:
    """The script as a file, bundled with the archives bound for ``/`` into one tar (one
    copy-in call). A script passed as an argument is capped by the kernel at 128 KiB, and an
    eval script carries the whole hidden test patch."""
    rest = [(directory, data) for directory, data in archives if directory != "/"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as bundle:
        for directory, data in archives:
            if directory != "/":
                continue
            with tarfile.open(fileobj=io.BytesIO(data)) as part:
                for member in part.getmembers():
                    bundle.addfile(member, part.extractfile(member) if member.isfile() else None)
        body = script.encode()
        info = tarfile.TarInfo(_SCRIPT_IN_CONTAINER.lstrip("/"))
        info.size, info.mode, info.mtime = len(body), 0o755, int(time.time())
        bundle.addfile(info, io.BytesIO(body))
    return [("/", buffer.getvalue()), *rest]


@contextmanager
def _finished_container(image: str, script: str, *, archives: Iterable[tuple[str, bytes]],
                        timeout_s: float, script_as_file: bool = True,
                        **create: Any) -> Iterator[tuple[Any, int, bool, str]]:
    """Create a container running `script` with bash, copy `archives` ((directory, tar
    bytes) pairs) in, start it and wait; yield (container, exit code, timed out, log) and
    remove it afterwards, whatever happened. An image build passes ``script_as_file=False``
    (its scripts are short, and a file would be committed into the image)."""
    if script_as_file:
        archives, command = _with_script(archives, script), ["bash", _SCRIPT_IN_CONTAINER]
    else:
        command = ["bash", "-c", script]
    container = connect().containers.create(image, command, detach=True, labels=_labels(), **create)
    try:
        for directory, data in archives:
            container.put_archive(directory, data)
        container.start()
        exit_code, timed_out = _wait(container, timeout_s)
        log = _capped(container.logs(stdout=True, stderr=True))
        yield container, exit_code, timed_out, log
    finally:
        try:
            container.remove(force=True, v=True)  # v: an image's VOLUMEs would outlive it
        except docker.errors.DockerException:
            pass


def run_script(
    image: str,
    script: str,
    *,
    archives: Iterable[tuple[str, bytes]] = (),
    timeout_s: float,
    limits: SandboxLimits = SandboxLimits(),
    volumes: dict | None = None,
    environment: dict | None = None,
    user: str = "root",
) -> RunResult:
    """Run `script` in a fresh, hardened container of `image`, then remove it.

    The container runs with docker's init as PID 1, so removing it never waits on a stop
    timeout (the official harness's `tail -f /dev/null` costs 15 s per container).
    """
    started = time.monotonic()
    try:
        with _finished_container(image, script, archives=archives, timeout_s=timeout_s,
                                 volumes=volumes or {}, environment=environment or {}, user=user,
                                 **_hardened(limits)) as (container, exit_code, timed_out, log):
            return RunResult(exit_code, log, timed_out, time.monotonic() - started)
    except docker.errors.ImageNotFound as exc:
        raise InfraError(f"image {image!r} is missing: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"Docker failed while running a container of {image!r}: {exc}") from exc


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"Docker failed while {what}: {exc}") from exc


class Sandbox:
    """A running container whose PID 1 (docker's init, over a root ``sleep``) outlives what
    runs in it, so the harness can look at what a run left behind through the Docker API,
    as root, after the untrusted processes are gone: nothing they wrote decides where the
    harness reads or writes."""

    def __init__(self, container: Any):
        self.container = container

    def run(self, command: list[str], *, user: str, timeout_s: float,
            environment: dict | None = None) -> tuple[int, bool]:
        """Run `command` detached as `user`; (exit code, timed out). Past `timeout_s` every
        process of `user` is killed."""
        api = self.container.client.api
        with _translated("starting a process in a sandbox"):
            exec_id = api.exec_create(self.container.id, command, user=user,
                                      environment=environment or {})["Id"]
            api.exec_start(exec_id, detach=True)
        deadline, pause = time.monotonic() + timeout_s, 0.05
        while True:
            with _translated("waiting on a process in a sandbox"):
                state = api.exec_inspect(exec_id)
            if not state["Running"] and state["ExitCode"] is not None:
                return int(state["ExitCode"]), False
            if time.monotonic() > deadline:
                self.kill_user(user)
                return -1, True
            time.sleep(pause)
            pause = min(0.25, pause * 1.5)

    def capture(self, command: list[str], *, user: str = "root",
                environment: dict | None = None) -> ExecResult:
        """Run `command` to its end and read its stdout and stderr straight from the Docker
        API (bound the output in the command itself, e.g. ``| head -c N``)."""
        with _translated("reading from a sandbox"):
            result = self.container.exec_run(command, user=user, environment=environment or {},
                                             demux=True)
        out, err = result.output if result.output else (b"", b"")
        return ExecResult(int(result.exit_code if result.exit_code is not None else -1),
                          out or b"", err or b"")

    def exec_stream(self, command: list[str], *, user: str,
                    environment: dict | None = None) -> tuple[str, Iterator[bytes]]:
        """Start `command` as `user`; (exec id, its stdout and stderr as they come, merged).
        The caller bounds what it keeps and how long it reads (`benchmark._exec_relay`)."""
        api = self.container.client.api
        with _translated("starting a command in a sandbox"):
            exec_id = api.exec_create(self.container.id, command, user=user,
                                      environment=environment or {})["Id"]
            stream = api.exec_start(exec_id, stream=True)

        def chunks() -> Iterator[bytes]:
            try:
                yield from stream
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                return  # the container went away: the output ends here
        return exec_id, chunks()

    def exec_exit_code(self, exec_id: str) -> int:
        """The exit code of a finished exec (-1 when Docker has none)."""
        with _translated("reading a command's exit code in a sandbox"):
            code = self.container.client.api.exec_inspect(exec_id).get("ExitCode")
        return -1 if code is None else int(code)

    def on_own_client(self) -> "Sandbox":
        """The same container through a Docker client of its own, for another thread (the
        SDK's session is not shared across threads)."""
        with _translated("connecting to Docker"):
            client = docker.from_env(timeout=120)
            return Sandbox(client.containers.get(self.container.id))

    def close_client(self) -> None:
        """Close the client of a Sandbox made by `on_own_client` (never the thread's own)."""
        self.container.client.close()

    def kill_user(self, user: str) -> None:
        """SIGKILL every process of `user` (``kill -1`` as that user spares PID 1 and the
        root keeper); twice, for what was forking meanwhile."""
        with _translated("stopping a sandbox's processes"):
            for _ in range(2):
                self.container.exec_run(["bash", "-c", "kill -9 -1"], user=user)


@contextmanager
def sandbox(image: str, *, archives: Iterable[tuple[str, bytes]] = (),
            limits: SandboxLimits = SandboxLimits(), volumes: dict | None = None,
            environment: dict | None = None, cap_add: list[str] | None = None,
            read_only: bool = False, tmpfs: dict | None = None) -> Iterator[Sandbox]:
    """A fresh hardened container of `image`, started, its `archives` copied in; removed
    afterwards whatever happened. Its keeper process runs as root (with every capability
    dropped but `cap_add`: root's, never the sandbox user's), so no process of the sandbox
    user can stop it or write to its output. `read_only`: the root file system too (then
    `archives` cannot be copied in; bind-mount them), with `tmpfs` mounts to write in."""
    try:
        container = connect().containers.create(
            image, ["sleep", "infinity"], detach=True, user="root", volumes=volumes or {},
            environment=environment or {}, labels=_labels(), cap_add=cap_add or None,
            read_only=read_only, tmpfs=tmpfs or None, **_hardened(limits))
    except docker.errors.ImageNotFound as exc:
        raise InfraError(f"image {image!r} is missing: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"Docker could not create a container of {image!r}: {exc}") from exc
    try:
        try:
            for directory, data in archives:
                container.put_archive(directory, data)
            container.start()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise InfraError(f"Docker could not start a container of {image!r}: {exc}") from exc
        yield Sandbox(container)
    finally:
        try:
            container.remove(force=True, v=True)
        except docker.errors.DockerException:
            pass
# What the root grading wrapper needs of root's powers, and no more: own the repo and a home
# for the sandbox user (a prebuilt image's /testbed is root's), write trip-wires into the
# user's test files, drop to the user for every step, and kill all of the user's processes.
_WRAPPER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]
_WRAPPER_LAUNCH = ('PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3); '
                   'exec "$PY" -I /ratchet/bin/wrapper.py')
KILL_GRACE_S = 5.0
"""How long past its limit the host waits for the wrapper before it kills the container."""


@dataclass
class GradingRun:
    """A finished grading: what its wrapper sent back (``result.json``, ``tests.log``,
    written on the host), the host's own view of the end (killed at its deadline, out of
    memory), and the wrapper's last output before its result, for error messages."""

    files: dict[str, Path]
    killed: bool
    oom_killed: bool
    seconds: float
    log_tail: str


def tree_tar(entries: Iterable[tuple[str, bytes | str | None, int]]) -> bytes:
    """A tar of (path, content or None for a directory, mode) entries, owned by root."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, content, mode in entries:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode, info.mtime = mode, now
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                continue
            data = content.encode() if isinstance(content, str) else content
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


RESULT_MAGIC = b"\n\0RATCHET-GRADING-RESULT\0"
"""Starts the wrapper's result on its stdout: then the result's JSON and the tests' output,
each after its 8-byte length. Only root processes hold that stdout (the sandbox user's
children get pipes of the wrapper's, and cannot open another uid's ``/proc/N/fd``)."""
NO_PART = (1 << 64) - 1
"""The length the wrapper sends for a part it does not have (`_wrapper.NO_LOG`)."""
_TAIL_BYTES = 64 << 10


@dataclass
class WaitingGrading:
    """A started grading container whose wrapper waits for its job on stdin, with the
    host's end of its stdin and stdout (one Docker attach, opened before the start)."""

    container: Any
    stream: Any
    image: str

    @property
    def _socket(self) -> socket.socket:
        return getattr(self.stream, "_sock", self.stream)

    def send(self, job: bytes) -> None:
        """The job, length-prefixed, then end of input: one write on a socket that is
        already open (a copy-in through the Docker API costs ~50 ms; this, ~3 ms)."""
        self._socket.sendall(len(job).to_bytes(8, "big") + job)
        self._socket.shutdown(socket.SHUT_WR)

    def collect(self, out_dir: Path, deadline: float, cap: int) -> tuple[dict[str, Path], str, bool]:
        """What the wrapper sends back on stdout, read as it streams: (files written to
        `out_dir`: ``result.json`` and ``tests.log``; the last output before the result
        for error messages; whether `deadline` passed first). No files when the stream
        ends before a whole result (the wrapper crashed or was killed)."""
        frames = _Frames(self._socket, deadline)
        before = bytearray()  # the wrapper's own output before its result (stderr too)
        out = bytearray()  # its stdout, where the result starts
        try:
            while RESULT_MAGIC not in out:
                kind, data = frames.next()
                if kind is None:
                    return {}, _tail(before), False
                before += data
                if kind == 1:
                    out += data
                for buffer in (before, out):
                    if len(buffer) > 2 * _TAIL_BYTES:
                        del buffer[:-_TAIL_BYTES]
            at = out.index(RESULT_MAGIC)
            if before.endswith(out[at:]):
                del before[len(before) - len(out) + at:]
            payload = _Payload(frames, out[at + len(RESULT_MAGIC):], cap)
            out_dir.mkdir(parents=True, exist_ok=True)
            files = {}
            for name in ("result.json", "tests.log"):
                path = out_dir / name
                copied = payload.copy_sized(path)
                if copied is None:  # torn: the wrapper died while sending
                    return {}, _tail(before), False
                if copied:
                    files[name] = path
            return files, _tail(before), False
        except TimeoutError:
            return {}, _tail(before), True

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass

    def remove(self) -> None:
        self.close()
        remove_quietly(self.container)


def _tail(data: bytes | bytearray) -> str:
    return bytes(data[-_TAIL_BYTES:]).decode("utf-8", "replace")


class _Frames:
    """Docker's multiplexed attach stream (no TTY): an 8-byte header (stream, 0, 0, 0,
    size) then the data; stdout and stderr both, in order."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def _exactly(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(data), 1 << 16))
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def next(self) -> tuple[int | None, bytes]:
        header = self._exactly(8)
        if header is None:
            return None, b""
        size = int.from_bytes(header[4:], "big")
        data = self._exactly(size) if size else b""
        return (None, b"") if data is None else (header[0], data)


class _Payload:
    """The wrapper's result after its start: length-prefixed parts, copied to files as
    they stream, at most `cap` bytes in all (more is the infrastructure's error)."""

    def __init__(self, frames: _Frames, pending: bytes | bytearray, cap: int):
        self.frames, self.pending, self.cap, self.seen = frames, bytearray(pending), cap, 0

    def _more(self) -> bool:
        kind, data = self.frames.next()
        if kind is None:
            return False
        if kind == 1:  # stdout; what reaches stderr now is not the result's
            self.pending += data
        return True

    def copy_sized(self, path: Path) -> bool | None:
        """The next part into `path`: True; False when the wrapper sent none (`NO_PART`);
        None when the stream ended inside it."""
        while len(self.pending) < 8:
            if not self._more():
                return None
        size = int.from_bytes(self.pending[:8], "big")
        del self.pending[:8]
        if size == NO_PART:
            return False
        self.seen += size
        if self.seen > self.cap:
            raise InfraError(f"the grading output passed {self.cap} bytes")
        with path.open("wb") as out:
            while size:
                if not self.pending and not self._more():
                    return None
                piece = self.pending[:size]
                out.write(piece)
                del self.pending[:len(piece)]
                size -= len(piece)
        return True


def start_grading_container(image: str, limits: SandboxLimits, code: bytes) -> WaitingGrading:
    """Create and start a grading container with the wrapper's code (`code`, a tar) in it;
    its wrapper waits for the job on stdin (`WaitingGrading.send`) and sends its result
    back on stdout. Started ahead of its patch, so a grading does not wait for a start;
    it grades once."""
    create = dict(_hardened(limits), cap_add=_WRAPPER_CAPS, user="root", working_dir="/",
                  labels={"ratchet.grading": "1", **_labels()},
                  # stdin open, closed by Docker when the host's one attach ends
                  stdin_open=True, detach=False,
                  # the host reads everything the wrapper prints through its attach
                  log_config=docker.types.LogConfig(type="none"))
    try:
        container = connect().containers.create(image, ["bash", "-c", _WRAPPER_LAUNCH], **create)
    except docker.errors.ImageNotFound as exc:
        raise InfraError(f"image {image!r} is missing: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"Docker failed to create a grading container of {image!r}: {exc}") from exc
    stream = None
    try:
        container.put_archive("/", code)
        stream = container.attach_socket(
            params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        container.start()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        if stream is not None:
            stream.close()
        remove_quietly(container)
        raise InfraError(f"Docker failed to start a grading container of {image!r}: {exc}") from exc
    return WaitingGrading(container, stream, image)


def remove_quietly(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass


def run_grading(image: str, code: bytes, job: bytes, *, timeout_s: float,
                limits: SandboxLimits, out_dir: Path, fetch_cap: int | None = None,
                started: WaitingGrading | None = None) -> GradingRun:
    """One grading: the root wrapper (`_wrapper`) runs with only the powers it needs,
    everything else as the sandbox user. `started` is a container `start_grading_container`
    started ahead (never one that graded before); else one is started here. The job goes
    in on the wrapper's stdin and its result comes back on its stdout, so the host never
    waits for the container to stop nor copies files out of it. Past `timeout_s` plus a
    grace the host kills the whole container (a fork bomb cannot keep it alive). The
    container is removed in the background once its result is in."""
    began = time.monotonic()
    waiting = started if started is not None else start_grading_container(image, limits, code)
    container = waiting.container
    cap = fetch_cap if fetch_cap is not None else 3 * limits.output_bytes + (16 << 20)
    done = False
    try:
        try:
            waiting.send(job)
            files, tail, killed = waiting.collect(out_dir, began + timeout_s + KILL_GRACE_S, cap)
        except OSError as exc:
            raise InfraError(f"Docker failed to pass a job to or read a result from the "
                             f"grading container of {image!r}: {exc}") from exc
        oom = False
        if killed:
            try:
                container.kill()
            except docker.errors.APIError as exc:  # it stopped on its own meanwhile
                if exc.status_code != 409:
                    raise
        if "result.json" not in files:  # the host's own view of why: killed, out of memory
            _wait(container, 30)
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        done = True
        return GradingRun(files, killed, oom, time.monotonic() - began, tail)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"Docker failed while grading in a container of {image!r}: {exc}") from exc
    finally:
        waiting.close()
        if done:
            _remover.submit(container)
        else:
            remove_quietly(container)


class _Remover:
    """Removes finished grading containers off the grading's critical path, on one
    background thread. `finish_removals` waits for it; at exit, what is still queued is
    removed before the process ends."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        atexit.register(self.drain)

    def submit(self, container: Any) -> None:
        self._queue.put(container)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ratchet-remover",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            container = self._queue.get()
            try:
                remove_quietly(container)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Return once every container submitted so far is removed."""
        while True:  # what the thread has not taken yet, here (it may be gone at exit)
            try:
                container = self._queue.get_nowait()
            except queue.Empty:
                break
            try:
                remove_quietly(container)
            finally:
                self._queue.task_done()
        self._queue.join()


_remover = _Remover()


def finish_removals() -> None:
    """Wait until every grading container this process finished with is removed."""
    _remover.drain()


def commit_script(
    image: str,
    script: str,
    *,
    tag: str,
    log_path: Path,
    archives: Iterable[tuple[str, bytes]] = (),
    volumes: dict | None = None,
    environment: dict | None = None,
    changes: list[str] | None = None,
    timeout_s: float = 1800,
) -> None:
    """Build an image: run `script` in a container of `image` with the network off, and
    commit the result as `tag`. The build log is written to `log_path` either way."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _finished_container(image, script, archives=archives, timeout_s=timeout_s,
                                 script_as_file=False, network_mode="none", volumes=volumes or {},
                                 environment=environment or {}) as (container, code, _, log):
            log_path.write_text(log, encoding="utf-8")
            if code != 0:
                last = log.strip().splitlines()[-1:] or ["(no output)"]
                raise ImageBuildError(tag, log_path, f"exit code {code}; last line: {last[0]}")
            repository, _, version = tag.rpartition(":")
            container.commit(repository=repository, tag=version,
                             changes=[*(changes or []), *_NOT_INHERITED])
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        log_path.write_text(f"Docker error: {exc}\n", encoding="utf-8")
        raise ImageBuildError(tag, log_path, str(exc)) from exc


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict
    status: str
    command: list
    size: int
    created: float


def list_containers(*, sizes: bool = False) -> list[ContainerInfo]:
    """This owner's containers (`OWNER_ENV`), running or not; `sizes`: their writable layer's."""
    with _translated("listing containers"):
        found = connect().api.containers(all=True, size=sizes,
                                         filters={"label": f"{CONTAINER_LABEL}={owner()}"})
    out = []
    for row in found:
        command = row.get("Command") or ""
        out.append(ContainerInfo(row["Id"], (row.get("Names") or ["?"])[0].lstrip("/"),
                                 row.get("Labels") or {}, row.get("State", ""), command.split(),
                                 int(row.get("SizeRw") or 0), float(row.get("Created") or 0)))
    return out


def dangling_volumes() -> list[tuple[str, int]]:
    """Anonymous volumes no container uses, with their sizes: (name, bytes)."""
    with _translated("listing volumes"):
        usage = connect().api.df().get("Volumes") or []
    out = []
    for volume in usage:
        data = volume.get("UsageData") or {}
        anonymous = "com.docker.volume.anonymous" in (volume.get("Labels") or {}) or \
            (len(volume["Name"]) == 64 and all(c in "0123456789abcdef" for c in volume["Name"]))
        if anonymous and data.get("RefCount") == 0:
            out.append((volume["Name"], int(data.get("Size") or 0)))
    return out


def list_images(namespace: str) -> list[dict]:
    """Images under `namespace`/ (``ratchet/base``, ``/env``, ``/task``): id, tags, parent,
    labels, size."""
    with _translated("listing images"):
        found = connect().images.list()
    out = []
    for image in found:
        tags = [t for t in image.tags if t.startswith(f"{namespace}/")]
        if tags:
            out.append({"id": image.id, "tags": tags, "parent": image.attrs.get("Parent") or "",
                        "labels": (image.attrs.get("Config") or {}).get("Labels") or {},
                        "size": int(image.attrs.get("Size") or 0)})
    return out


def remove_by_id(kind: str, ident: str) -> str | None:
    """Remove a container (with its volumes), a volume or an image tag; why not, or None."""
    client = connect()
    try:
        if kind == "container":
            client.api.remove_container(ident, v=True, force=True)
        elif kind == "volume":
            client.api.remove_volume(ident)
        else:
            client.api.remove_image(ident)
    except docker.errors.NotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return str(exc).splitlines()[0][:200]
    return None


def import_rootfs(tarball: Path, tag: str, changes: list[str]) -> None:
    """``docker import``: a root file system tarball becomes an image."""
    repository, _, version = tag.rpartition(":")
    try:
        connect().api.import_image_from_file(
            str(tarball), repository=repository, tag=version, changes=changes
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfraError(f"docker import of {tarball} failed: {exc}") from exc
