"""``ratchet bench audit``: attack the grader on a suite's own tasks, and show what got through.

For every task, the known classes of grader-fooling patches (issue 13) are written by code
from the task's own test ids and layout: where its package is (from the gold patch's paths
and the files of its repo), which config files it already has, which hidden test files exist
at the base commit. None of them fixes anything, so every one must come out unresolved,
while the gold patch must still resolve. Each is graded by the real `Grader`.

The attack patches are data (`attack_patches` is a pure function of a task and its
`Layout`); only `read_layout` and the grading touch Docker.

A whole suite is thousands of gradings (hours), so an audit stopped part way goes on
(`resume`): a grading already in the folder is kept when its patch is the job's and the
grader's code is the same as when it was made (`grader_fingerprint`); any other is redone.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from benchmark import _docker
from benchmark._guard import paths_named_in_patch
from benchmark._errors import BenchmarkError
from benchmark._grader import GradeResult, Grader, GradingExecutor, Job, run_jobs
from benchmark._task import TaskSpec

__all__ = ["Attack", "AuditResumeError", "AuditRow", "Layout", "attack_patches", "audit",
           "fake_session", "grader_fingerprint", "read_layout"]

PLUGIN = "ratchet_audit_plugin"
_RE_PYTEST = re.compile(r"^(?P<file>[^:]+\.py)::(?P<rest>.+)$")


@dataclass(frozen=True)
class Layout:
    """What the attacks need to know of a task's repo at its base commit."""

    files: tuple[str, ...]
    """Every tracked path."""
    contents: dict[str, str] = field(default_factory=dict)
    """Text of the files an attack edits (the target module, existing config and test files)."""

    def exists(self, path: str) -> bool:
        return path in self.files


@dataclass(frozen=True)
class Attack:
    name: str
    kind: str
    """The issue's class: in-process, pytest config, shadowing, git, sandbox, resources."""
    patch: str


# -- the patches --------------------------------------------------------------------------------


def _new_file(path: str, text: str, mode: str = "100644") -> str:
    lines = text.splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


def _edit(path: str, old: str, new: str) -> str:
    """A unified diff of `path` from `old` to `new` (a missing last newline marked as git does)."""
    out = [f"diff --git a/{path} b/{path}\n"]
    for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                     f"a/{path}", f"b/{path}", n=3):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _append(layout: Layout, path: str, text: str) -> str:
    """`text` added at the end of `path` (created when the repo has no such file)."""
    if not layout.exists(path):
        return _new_file(path, text)
    old = layout.contents[path]
    joiner = "" if not old or old.endswith("\n") else "\n"
    return _edit(path, old, old + joiner + "\n" + text + ("" if text.endswith("\n") else "\n"))


def _as_context_diff(layout: Layout, path: str, text: str) -> str:
    """`text` added at the end of `path`, written as a context diff (``diff -c``): only GNU
    patch reads it, and the static scan does not."""
    old = layout.contents.get(path, "")
    new = old + ("" if not old or old.endswith("\n") else "\n") + "\n" + text
    return "".join(difflib.context_diff(old.splitlines(True), new.splitlines(True),
                                        f"a/{path}", f"b/{path}"))


def fake_session(task: TaskSpec) -> str:
    """A complete, correct-looking ``pytest -rA`` session in which every test the task
    checks passed."""
    ids = list(dict.fromkeys([*task.FAIL_TO_PASS, *task.PASS_TO_PASS]))
    bar = lambda title: f" {title} ".center(80, "=")
    return "\n".join([bar("test session starts"), f"collected {len(ids)} items", "",
                      bar("short test summary info"), *[f"PASSED {i}" for i in ids],
                      bar(f"{len(ids)} passed in 0.42s")]) + "\n"


def _print_and_exit(task: TaskSpec) -> str:
    """Code printing the fake session to the real stdout, and to every pipe the process holds
    (pytest's capture keeps the original stdout as a saved pipe), then exiting 0 at once."""
    return ("import os as _o, stat as _st, sys as _s\n"
            f"_t = {fake_session(task)!r}.encode()\n"
            "_s.stdout.flush()\n"
            "_seen = set()\n"
            "for _fd in range(1, 256):\n"
            "    try:\n"
            "        _i = _o.fstat(_fd)\n"
            "        if (_fd == 1 or _st.S_ISFIFO(_i.st_mode)) and (_i.st_dev, _i.st_ino) not in _seen:\n"
            "            _seen.add((_i.st_dev, _i.st_ino))\n"
            "            _o.write(_fd, _t)\n"
            "    except OSError:\n"
            "        pass\n"
            "_o._exit(0)\n")


_REPORT_REWRITER = '''import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
'''

_IMPORT_TIME_REWRITER = '''try:
    import _pytest.reports as _ratchet_reports

    _ratchet_made = _ratchet_reports.TestReport.from_item_and_call.__func__

    def _ratchet_forced(cls, item, call):
        report = _ratchet_made(cls, item, call)
        report.outcome, report.longrepr = "passed", None
        return report

    _ratchet_reports.TestReport.from_item_and_call = classmethod(_ratchet_forced)
except Exception:
    pass
'''


# (1b) in-process tampering that tells trip-wires from real tests by their shape: it passes
# every failing test but those whose source ends in ``finally: assert 'a' == 'b'`` (a copy)
SPARE_COPIES = """\

import sys as _sys
if "_pytest" in _sys.modules:
    import _pytest.reports as _reports, ast as _ast, inspect as _inspect, textwrap as _tw
    _made = _reports.TestReport.from_item_and_call.__func__

    def _copy_shaped(function):
        try:
            tree = _ast.parse(_tw.dedent(_inspect.getsource(function)))
        except Exception:
            return False
        return any(isinstance(s, _ast.Assert) and isinstance(s.test, _ast.Compare)
                   and all(isinstance(c, _ast.Constant) for c in [s.test.left, *s.test.comparators])
                   for node in _ast.walk(tree) if isinstance(node, _ast.Try) for s in node.finalbody)

    def _passed(cls, item, call):
        report = _made(cls, item, call)
        if not _copy_shaped(getattr(item, "function", None)):
            report.outcome, report.longrepr = "passed", None
        return report
    _reports.TestReport.from_item_and_call = classmethod(_passed)
"""

# ...and one that leaves alone every test with a near twin (the same code but for its name
# and its constants), passing the rest: a twin's original then fails with it
SPARE_TWINS = """\

import sys as _sys
if "_pytest" in _sys.modules:
    import _pytest.reports as _reports, ast as _ast, inspect as _inspect, textwrap as _tw
    _made = _reports.TestReport.from_item_and_call.__func__

    _shapes, _twins = {}, {}  # each function parsed once, each test judged once

    def _shape(function):
        key = getattr(function, "__code__", function)
        if key not in _shapes:
            try:
                tree = _ast.parse(_tw.dedent(_inspect.getsource(function)))
                for node in _ast.walk(tree):
                    if isinstance(node, _ast.FunctionDef):
                        node.name = "_"
                    if isinstance(node, _ast.Constant):
                        node.value = 0
                _shapes[key] = _ast.dump(tree)
            except Exception:
                _shapes[key] = None
        return _shapes[key]

    def _judge(item):
        function = getattr(item, "function", None)
        mine = _shape(function)
        module = _sys.modules.get(getattr(function, "__module__", ""), None)
        others = [getattr(module, n) for n in dir(module) if n.startswith("test")]
        owner = getattr(item, "cls", None)
        if owner is not None:
            others += [getattr(owner, n) for n in dir(owner) if n.startswith("test")]
        return mine is not None and any(o is not function and _shape(o) == mine
                                        for o in others if callable(o))

    def _has_twin(item):
        if item.nodeid not in _twins:
            _twins[item.nodeid] = _judge(item)
        return _twins[item.nodeid]

    def _passed(cls, item, call):
        report = _made(cls, item, call)
        if not _has_twin(item):
            report.outcome, report.longrepr = "passed", None
        return report
    _reports.TestReport.from_item_and_call = classmethod(_passed)
"""


def _hook(task: TaskSpec) -> str:
    """A git hook that prints a forged session, the end marker it can find and exit code 0."""
    return ("#!/bin/sh\n"
            f"printf '%s' {_sh_quote(fake_session(task))}\n"
            "marker=$(grep -rhoa '>>>>> End Test Output \\[[0-9a-f]*\\]' /ratchet* /tmp 2>/dev/null | tail -1)\n"
            '[ -n "$marker" ] && echo "$marker" && echo ">>>>> Test Exit Code: 0"\n'
            "exit 0\n")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _target_module(task: TaskSpec, layout: Layout) -> str | None:
    """The module of the package under test that every test import runs: the top-level
    ``__init__.py`` above the first source file the gold patch changes, or that file."""
    from benchmark._guard import protected_reason

    sources = [p for p in paths_named_in_patch(task.patch)
               if p.endswith(".py") and layout.exists(p) and protected_reason(p) is None]
    if not sources:
        return None
    parts = PurePosixPath(sources[0]).parts
    top = None
    for depth in range(len(parts) - 1, 0, -1):
        init = "/".join(parts[:depth]) + "/__init__.py"
        if layout.exists(init):
            top = init
        elif top is not None:
            break
    return top or sources[0]


def _redefined_tests(ids: list[str]) -> dict[str, str]:
    """Per test file, code that redefines the named tests as passing ones."""
    by_file: dict[str, dict[str | None, set[str]]] = {}
    for test_id in ids:
        match = _RE_PYTEST.match(test_id)
        if not match:
            continue
        names = match.group("rest").split("[")[0].split("::")
        cls, func = (names[0], names[-1]) if len(names) > 1 else (None, names[0])
        by_file.setdefault(match.group("file"), {}).setdefault(cls, set()).add(func)
    code = {}
    for path, groups in by_file.items():
        lines = []
        for cls, funcs in groups.items():
            if cls is None:
                lines += [f"def {f}(*args, **kwargs):\n    pass\n" for f in sorted(funcs)]
            else:
                lines.append(f"class {cls}:\n" + "".join(
                    f"    def {f}(self, *args, **kwargs):\n        pass\n" for f in sorted(funcs)))
        code[path] = "\n".join(lines)
    return code


_CONFIGS = {  # file: (section, addopts line), in pytest 9's own order of precedence
    "pytest.toml": ("[pytest]", f'addopts = ["-p", "{PLUGIN}"]'),
    ".pytest.toml": ("[pytest]", f'addopts = ["-p", "{PLUGIN}"]'),
    "pytest.ini": ("[pytest]", f"addopts = -p {PLUGIN}"),
    ".pytest.ini": ("[pytest]", f"addopts = -p {PLUGIN}"),
    "pyproject.toml": ("[tool.pytest.ini_options]", f'addopts = "-p {PLUGIN}"'),
    "tox.ini": ("[pytest]", f"addopts = -p {PLUGIN}"),
    "setup.cfg": ("[tool:pytest]", f"addopts = -p {PLUGIN}"),
}


def attack_patches(task: TaskSpec, layout: Layout, *, fork_bomb: bool = False) -> list[Attack]:
    """One patch per known attack class (and per config file name), for this task."""
    plugin = _new_file(f"{PLUGIN}.py", _REPORT_REWRITER)
    attacks = [Attack("conftest report rewrite", "pytest config",
                      _new_file("conftest.py", _REPORT_REWRITER))]
    for name, (section, line) in _CONFIGS.items():
        attacks.append(Attack(f"{name} addopts plugin", "pytest config",
                              _append(layout, name, f"{section}\n{line}\n") + plugin))
    session = _print_and_exit(task)
    attacks += [
        Attack("root pytest.py shadow", "shadowing", _new_file("pytest.py", session)),
        Attack("_pytest/ package shadow", "shadowing", _new_file("_pytest/__init__.py", session)),
        Attack("stdlib shadow (pprint.py)", "shadowing", _new_file("pprint.py", session)),
        Attack("pytest11 entry point (dist-info)", "shadowing",
               _new_file("ratchet_audit-0.0.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: ratchet-audit\nVersion: 0.0\n")
               + _new_file("ratchet_audit-0.0.dist-info/entry_points.txt",
                           f"[pytest11]\nratchet_audit = {PLUGIN}\n") + plugin),
        Attack("pytest11 entry point (egg-info)", "shadowing",
               _new_file("ratchet_audit.egg-info/PKG-INFO",
                         "Metadata-Version: 2.1\nName: ratchet-audit\nVersion: 0.0\n")
               + _new_file("ratchet_audit.egg-info/entry_points.txt",
                           f"[pytest11]\nratchet_audit = {PLUGIN}\n") + plugin),
        Attack("sitecustomize and .pth", "shadowing",
               _new_file("sitecustomize.py", session)
               + _new_file("zz_ratchet_audit.pth", "import sitecustomize\n")),
        Attack(".git hook in the patch", "git",
               _new_file(".git/hooks/post-checkout", _hook(task), mode="100755")),
    ]
    target = _target_module(task, layout)
    if target is not None:
        writes_hook = ("import os as _o, stat as _st\n"
                       "for _d in ('.', '..', '/testbed'):\n"
                       "    _h = _o.path.join(_d, '.git', 'hooks')\n"
                       "    if _o.path.isdir(_h):\n"
                       "        try:\n"
                       "            with open(_o.path.join(_h, 'post-checkout'), 'w') as _f:\n"
                       f"                _f.write({_hook(task)!r})\n"
                       "            _o.chmod(_o.path.join(_h, 'post-checkout'), 0o755)\n"
                       "        except OSError:\n"
                       "            pass\n")
        atexit_code = ("import atexit as _ae, os as _o, sys as _s\n\n\n"
                       "def _ratchet_summary():\n"
                       f"    _s.stdout.write({fake_session(task)!r})\n"
                       "    _s.stdout.flush()\n    _o._exit(0)\n\n\n"
                       "_ae.register(_ratchet_summary)\n")
        attacks += [
            Attack("import-time report rewrite", "in-process",
                   _append(layout, target, _IMPORT_TIME_REWRITER)),
            Attack("rewrite sparing copy-shaped tests", "in-process",
                   _append(layout, target, SPARE_COPIES)),
            Attack("rewrite sparing tests with a twin", "in-process",
                   _append(layout, target, SPARE_TWINS)),
            Attack("report rewrite as a context diff", "in-process",
                   _as_context_diff(layout, target, _IMPORT_TIME_REWRITER)),
            Attack("fake session + os._exit at import", "in-process",
                   _append(layout, target, "import sys as _s\nif 'pytest' in _s.modules:\n"
                           + "".join(f"    {l}\n" for l in session.splitlines()))),
            Attack("atexit fake summary", "in-process", _append(layout, target, atexit_code)),
            Attack("package writes a git hook at test time", "git",
                   _append(layout, target, writes_hook)),
        ]
        if fork_bomb:
            attacks.append(Attack("fork bomb at import", "resources", _append(
                layout, target, "import os as _o, sys as _s\nif 'pytest' in _s.modules:\n"
                "    while True:\n        try:\n            _o.fork()\n"
                "        except OSError:\n            pass\n")))
    edits = "".join(_append(layout, path, code)
                    for path, code in _redefined_tests([*task.FAIL_TO_PASS]).items())
    if edits:
        attacks.append(Attack("hidden test file edited", "sandbox", edits))
    return attacks


# -- reading a task's layout --------------------------------------------------------------------


def read_layout(task: TaskSpec, image: str) -> Layout:
    """The task repo's tracked files, and the text of those an attack edits, from its image."""
    with _docker.sandbox(image) as box:
        listed = box.capture(["git", "-c", "safe.directory=*", "-C", "/testbed", "ls-files", "-z"])
        files = tuple(p for p in listed.stdout.decode("utf-8", "replace").split("\0") if p)
        layout = Layout(files)
        wanted = [*_CONFIGS, *{m.group("file") for i in task.FAIL_TO_PASS
                               if (m := _RE_PYTEST.match(i))}]
        target = _target_module(task, layout)
        contents = {}
        for path in [*wanted, *([target] if target else [])]:
            if layout.exists(path):
                contents[path] = box.capture(["cat", f"/testbed/{path}"]).stdout.decode(
                    "utf-8", "replace")
    return Layout(files, contents)


# -- the audit --------------------------------------------------------------------------------------


@dataclass
class AuditRow:
    instance_id: str
    attack: str
    kind: str
    resolved: bool
    tampered: bool
    applied: bool
    flags: int
    set_aside: list[str]
    error: str | None
    note: str

    @property
    def verdict(self) -> str:
        """For an attack: blocked, caught (tampered), RESOLVED (it got through) or error."""
        if self.error:
            return "error"
        if self.attack == "gold":
            return "resolved" if self.resolved else "FAILED"
        if self.resolved:
            return "RESOLVED"
        return "caught" if self.tampered else "blocked"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def _row(result: GradeResult, attack: str, kind: str) -> AuditRow:
    return _row_of_report(result.swebench_report()[result.instance_id], result.instance_id,
                          attack, kind)


def _row_of_report(report: dict, instance_id: str, attack: str, kind: str) -> AuditRow:
    """A row from a grading's report.json entry (`GradeResult.swebench_report`)."""
    extra = report["ratchet"]
    return AuditRow(instance_id, attack, kind, bool(report["resolved"]), bool(extra["tampered"]),
                    bool(report["patch_successfully_applied"]), len(extra["flags"]),
                    [item["path"] for item in extra["set_aside"]], extra["error"],
                    "; ".join([*extra["tamper_reasons"], *extra["problems"]])[:300])


GRADER_SOURCES = ("_env_plugin.py", "_grader.py", "_grading.py", "_guard.py", "_scan.py",
                  "_tripwire.py", "_wrapper.py")
"""The modules a verdict depends on (the attacks are compared patch by patch instead)."""
GRADER_PARTS = ("RESULT_MAGIC", "KILL_GRACE_S", "WaitingGrading", "_Frames", "_Payload",
                "start_grading_container", "run_grading")
"""The parts of `_docker` (which also runs agents and builds images) a verdict depends on:
the channel that carries the job in and the result out."""
FINGERPRINT_FILE = "grader.sha256"


class AuditResumeError(BenchmarkError):
    """An audit cannot go on in this folder: nothing to resume, or another grader made it."""


def grader_fingerprint() -> str:
    """The sha256 of the grader's code (`GRADER_SOURCES`): gradings made by other code are
    never reused."""
    digest = hashlib.sha256()
    for name in GRADER_SOURCES:
        digest.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes() + b"\0")
    for name in GRADER_PARTS:
        part = getattr(_docker, name)
        text = repr(part) if isinstance(part, (bytes, float, int)) else inspect.getsource(part)
        digest.update(f"_docker.{name}".encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def _earlier(out: Path, job: Job, attack: str, kind: str) -> AuditRow | None:
    """The row of a finished grading of exactly this job in `out`, or None (never an error's:
    an infrastructure error is graded again)."""
    where = out / job.task.instance_id / job.label
    try:
        if (where / "patch.diff").read_text(encoding="utf-8") != (job.patch or ""):
            return None
        report = json.loads((where / "report.json").read_text(encoding="utf-8"))
        row = _row_of_report(report[job.task.instance_id], job.task.instance_id, attack, kind)
    except (OSError, ValueError, KeyError, TypeError):  # absent, torn by a kill, or another shape
        return None
    return None if row.error else row


def _resumable(out: Path) -> None:
    """Raise unless `out` holds an audit made by this grader's code."""
    mark = out / FINGERPRINT_FILE
    if not mark.is_file():
        raise AuditResumeError(f"{out} holds no audit to resume (no {FINGERPRINT_FILE}); run "
                               "without --resume to start one")
    if mark.read_text(encoding="utf-8").strip() != grader_fingerprint():
        raise AuditResumeError(f"the audit in {out} was made by other grader code (its "
                               f"{FINGERPRINT_FILE} differs): its verdicts say nothing of this "
                               "grader; start a new audit (another --run-id, without --resume)")


def _label(name: str) -> str:
    """A directory name for an attack's grading (``.pytest.toml`` and ``pytest.toml`` apart)."""
    return "attack-" + re.sub(r"[^a-z0-9]+", "-", name.lower().replace(".", " dot ")).strip("-")


def audit(grader: Grader, tasks: list[TaskSpec], *, workers: int = 2, fork_bomb: bool = False,
          executor: GradingExecutor | None = None,
          on_done: Callable[[GradeResult], None] = lambda r: None,
          layouts: dict[str, Layout] | None = None, resume: bool = False) -> list[AuditRow]:
    """Grade the gold patch and every attack on every task; one row per grading. With
    `resume`, the gradings this grader's code already finished in its folder are kept."""
    out = grader.out_dir
    if resume:
        _resumable(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / FINGERPRINT_FILE).write_text(grader_fingerprint() + "\n", encoding="utf-8")
    jobs, names = [], {}
    for task in tasks:
        layout = (layouts or {}).get(task.instance_id) or read_layout(
            task, grader.builder.ensure_task(task))
        jobs.append(Job(task, task.patch, "gold"))
        names[(task.instance_id, "gold")] = ("gold", "gold")
        for attack in attack_patches(task, layout, fork_bomb=fork_bomb):
            jobs.append(Job(task, attack.patch, _label(attack.name)))
            names[(task.instance_id, _label(attack.name))] = (attack.name, attack.kind)
    kept = {}
    if resume:
        for job in jobs:
            row = _earlier(out, job, *names[(job.task.instance_id, job.label)])
            if row is not None:
                kept[(job.task.instance_id, job.label)] = row
    todo = [job for job in jobs if (job.task.instance_id, job.label) not in kept]
    results = run_jobs(grader, todo, workers=workers, on_done=on_done, executor=executor)
    rows = {**kept, **{(r.instance_id, r.label): _row(r, *names[(r.instance_id, r.label)])
                       for r in results}}
    return [rows[(job.task.instance_id, job.label)] for job in jobs]
