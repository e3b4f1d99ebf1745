"""Attacks on the grader from a patch, one per class of issue 13, on a real quickstart task.

Each attack starts from the task's *unfixed* code, so a resolved verdict means the attack
worked. Each is graded twice: with its defence switched off (a `Defences` switch, which only
these tests use), where it must come out resolved, which proves the attack is real; and with
the defence on, where it must not. All gradings of the module run up front, two at a time.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from benchmark import Grader, ImageBuilder, TaskSpec, load_suite
from benchmark._audit import SPARE_COPIES as _SPARE_COPIES, SPARE_TWINS as _SPARE_TWINS
from benchmark._grader import Defences, GradeResult, map_unordered

pytestmark = pytest.mark.docker

TASK_ID = "toolz__toolz-1.2.0__dissoc-many-keys"
MODULE = "toolz/dicttoolz.py"
OFF_ALL_RULES = dict(tripwires=False)  # isolate one defence: trip-wires catch most of these

REWRITER = textwrap.dedent("""\
    import pytest


    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item, call):
        report = yield
        report.outcome = "passed"
        report.longrepr = None
        return report
    """)

# (1) in-process tampering, appended to the package module (runs when the tests import it)
AT_IMPORT_REWRITE = textwrap.dedent("""\

    import sys as _sys
    if "_pytest" in _sys.modules:
        import _pytest.reports as _reports
        _made = _reports.TestReport.from_item_and_call.__func__

        def _passed(cls, item, call):
            report = _made(cls, item, call)
            report.outcome, report.longrepr = "passed", None
            return report
        _reports.TestReport.from_item_and_call = classmethod(_passed)
    """)

_FAKE_LINES = textwrap.dedent("""\
    def _fake_ids():
        import glob, re
        ids = []
        for path in sorted(glob.glob("**/test_*.py", recursive=True)):
            text = open(path).read()
            classes = re.findall(r"^class (Test\\w*)", text, re.M)
            for name in re.findall(r"^    def (test_\\w+)", text, re.M):
                ids += [f"{path}::{cls}::{name}" for cls in classes]
            ids += [f"{path}::{name}" for name in re.findall(r"^def (test_\\w+)", text, re.M)]
        return ids


    def _fake_summary(header):
        ids = _fake_ids()
        if header:
            print("=" * 29 + " test session starts " + "=" * 30)
            print(f"collected {len(ids)} items")
        print("=" * 27 + " short test summary info " + "=" * 28)
        for test in ids:
            print(f"PASSED {test}")
        print("=" * 30 + f" {len(ids)} passed in 0.10s " + "=" * 30, flush=True)
    """)

AT_IMPORT_FAKE_SESSION = "\nimport os as _os, sys as _sys\n" + _FAKE_LINES + textwrap.dedent("""\


    if "_pytest" in _sys.modules:
        import gc as _gc
        for _capman in [o for o in _gc.get_objects() if type(o).__name__ == "CaptureManager"]:
            _capman.suspend_global_capture(in_=True)  # print to the real stdout
        _fake_summary(header=True)
        _os._exit(0)
    """)

AT_EXIT_FAKE_SUMMARY = "\nimport atexit as _atexit, os as _os, sys as _sys\n" + _FAKE_LINES + textwrap.dedent("""\


    def _after_the_real_one():
        _fake_summary(header=False)
        _os._exit(0)


    if "_pytest" in _sys.modules:
        _atexit.register(_after_the_real_one)
    """)

# (4) the wrapper's result channel: a forged result (the host's start marker, a result
# saying the tests passed, a passing log) written into every stdout and stderr in reach
FORGE_THE_RESULT = "\nimport json as _json, os as _os, sys as _sys\n" + _FAKE_LINES + textwrap.dedent("""\


    if "_pytest" in _sys.modules:
        import gc as _gc, io as _io, contextlib as _cl
        _log = _io.StringIO()
        with _cl.redirect_stdout(_log):
            _fake_summary(header=True)
        _body = _json.dumps({"guard": {"applied": True, "refused": [], "set_aside": []},
                             "exit_code": 0, "tripwires": [], "steps": {}}).encode()
        _tail = _log.getvalue().encode()
        _forged = (b"\\n\\0RATCHET-GRADING-RESULT\\0" + len(_body).to_bytes(8, "big") + _body
                   + len(_tail).to_bytes(8, "big") + _tail)
        _tried = []
        for _pid in sorted(p for p in _os.listdir("/proc") if p.isdigit()):
            for _fd in ("1", "2"):
                try:
                    _uid = _os.stat(f"/proc/{_pid}").st_uid
                    with open(f"/proc/{_pid}/fd/{_fd}", "wb") as _handle:
                        _handle.write(_forged)
                    _tried.append([_pid, _uid, _fd, "written"])
                except OSError as _exc:
                    _tried.append([_pid, _uid, _fd, _exc.errno])
        for _capman in [o for o in _gc.get_objects() if type(o).__name__ == "CaptureManager"]:
            _capman.suspend_global_capture(in_=True)
        print("RATCHET-ATTACK " + _json.dumps(_tried), flush=True)
    """)

SHADOW_PYTEST = textwrap.dedent("""\
    import os, sys
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.getcwd()]
    import pytest as _real
    import toolz.ratchet_helper as _helper
    sys.exit(_real.main(sys.argv[1:], plugins=[_helper]))
    """)

SHADOW_PRIVATE_PYTEST = textwrap.dedent("""\
    import os, sys
    _here = os.path.dirname(os.path.abspath(__file__))
    for _entry in sys.path:
        _real = os.path.join(os.path.abspath(_entry or "."), "_pytest")
        if _real != _here and os.path.isfile(os.path.join(_real, "__init__.py")):
            break
    __path__ = [_real]
    __file__ = os.path.join(_real, "__init__.py")
    exec(compile(open(__file__).read(), __file__, "exec"))
    os.environ["PYTEST_PLUGINS"] = "toolz.ratchet_helper"
    """)

SHADOW_PPRINT = textwrap.dedent("""\
    import importlib.util, os, sysconfig
    _spec = importlib.util.spec_from_file_location(
        "pprint", os.path.join(sysconfig.get_paths()["stdlib"], "pprint.py"))
    _real = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_real)
    globals().update({k: v for k, v in vars(_real).items() if not k.startswith("__")})
    os.environ["PYTEST_PLUGINS"] = "toolz.ratchet_helper"
    """)

HOOK = "#!/bin/sh\ncat > conftest.py <<'EOF'\n" + REWRITER + "EOF\n"


def _new_file(path: str, content: str, mode: str = "100644") -> str:
    lines = content.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{body}")


def _context_diff(path: str, original: str, code: str) -> str:
    """`code` appended to `path` as a context diff (``diff -c``), which only GNU patch reads."""
    return "".join(difflib.context_diff(original.splitlines(True),
                                        (original + code).splitlines(True), f"a/{path}", f"b/{path}"))


def _append(path: str, original: str, code: str) -> str:
    diff = difflib.unified_diff(original.splitlines(True), (original + code).splitlines(True),
                                f"a/{path}", f"b/{path}")
    return f"diff --git a/{path} b/{path}\n" + "".join(diff)


HELPER = _new_file("toolz/ratchet_helper.py", REWRITER)


@pytest.fixture(scope="module")
def task() -> TaskSpec:
    return next(t for t in load_suite("quickstart").tasks if t.instance_id == TASK_ID)


@pytest.fixture(scope="module")
def module_source(task) -> str:
    from benchmark import _docker

    image = ImageBuilder().ensure_task(task)
    return _docker.run_script(image, f"cat /testbed/{MODULE}", timeout_s=60).log


def _patches(module_source: str) -> dict[str, tuple[str, Defences]]:
    off = Defences(tripwires=False)
    append = lambda code: _append(MODULE, module_source, code)  # noqa: E731
    egg = (_new_file("ratchet_helper.egg-info/PKG-INFO",
                     "Metadata-Version: 2.1\nName: ratchet-helper\nVersion: 1.0\n")
           + _new_file("ratchet_helper.egg-info/entry_points.txt",
                       "[pytest11]\nhelper = toolz.ratchet_helper\n") + HELPER)
    no_shadow = Defences(tripwires=False, refuse_shadowing=False, safe_path=False)
    return {
        # (1) in-process tampering at import
        "rewrite/off": (append(AT_IMPORT_REWRITE), Defences(tripwires=False)),
        "rewrite/on": (append(AT_IMPORT_REWRITE), Defences()),
        "context-diff/off": (_context_diff(MODULE, module_source, AT_IMPORT_REWRITE),
                             Defences(tripwires=False, refuse_other_formats=False)),
        "context-diff/on": (_context_diff(MODULE, module_source, AT_IMPORT_REWRITE),
                            Defences(tripwires=False)),
        "spare-copies/off": (append(_SPARE_COPIES), Defences(twins=False)),
        "spare-copies/on": (append(_SPARE_COPIES), Defences()),
        "spare-twins/on": (append(_SPARE_TWINS), Defences()),
        "fake-session/off": (append(AT_IMPORT_FAKE_SESSION), Defences(tripwires=False, junit=False)),
        "fake-session/on": (append(AT_IMPORT_FAKE_SESSION), Defences()),
        "atexit/off": (append(AT_EXIT_FAKE_SUMMARY), Defences(tripwires=False, junit=False)),
        "atexit/junit-only": (append(AT_EXIT_FAKE_SUMMARY), Defences(tripwires=False)),
        "atexit/on": (append(AT_EXIT_FAKE_SUMMARY), Defences()),
        # (4) only the channel: no trip-wire or junit would catch a forged result taken
        "forged-result/channel-only": (append(FORGE_THE_RESULT),
                                       Defences(tripwires=False, junit=False)),
        # (2) files that steer pytest
        "pytest.toml/off": (_new_file("pytest.toml", '[pytest]\naddopts = ["-p", "toolz.ratchet_helper"]\n')
                            + HELPER, Defences(tripwires=False, config_files=tuple(
                                n for n in Defences().config_files if n != "pytest.toml"))),
        ".pytest.toml/off": (_new_file(".pytest.toml", '[pytest]\naddopts = ["-p", "toolz.ratchet_helper"]\n')
                             + HELPER, Defences(tripwires=False, config_files=tuple(
                                 n for n in Defences().config_files if n != ".pytest.toml"))),
        "toml/on": (_new_file("pytest.toml", '[pytest]\naddopts = ["-p", "toolz.ratchet_helper"]\n')
                    + _new_file(".pytest.toml", '[pytest]\naddopts = ["-p", "toolz.ratchet_helper"]\n')
                    + HELPER, off),
        "pytest.py/off": (_new_file("pytest.py", SHADOW_PYTEST) + HELPER, no_shadow),
        "_pytest/off": (_new_file("_pytest/__init__.py", SHADOW_PRIVATE_PYTEST) + HELPER, no_shadow),
        "pprint.py/off": (_new_file("pprint.py", SHADOW_PPRINT) + HELPER, no_shadow),
        "pprint.py/safe-path-only": (_new_file("pprint.py", SHADOW_PPRINT) + HELPER,
                                     Defences(tripwires=False, refuse_shadowing=False)),
        "shadows/on": (_new_file("pytest.py", SHADOW_PYTEST) + _new_file("_pytest/__init__.py", SHADOW_PRIVATE_PYTEST)
                       + _new_file("pprint.py", SHADOW_PPRINT) + HELPER, off),
        "egg-info/off": (egg, Defences(tripwires=False, refuse_packaging_metadata=False,
                                       plugin_autoload_off=False, safe_path=False)),
        "egg-info/on": (egg, off),
        # (3) git as a side door: a hook planted under .git by the patch fallback, which
        # re-creates a root conftest.py after the guard ran
        "git-hook/off": (_new_file(".git/hooks/post-checkout", HOOK, "100755"),
                         Defences(tripwires=False, refuse_git_paths=False, hooks_off=False)),
        "git-hook/hooks-off-only": (_new_file(".git/hooks/post-checkout", HOOK, "100755"),
                                    Defences(tripwires=False, refuse_git_paths=False)),
        "git-hook/on": (_new_file(".git/hooks/post-checkout", HOOK, "100755"), off),
        # honest patches must keep resolving with every defence on
        "gold": (None, Defences()),
        "gold+own-test": (None, Defences()),
    }


@pytest.fixture(scope="module")
def graded(task, module_source, tmp_path_factory) -> dict[str, GradeResult]:
    builder = ImageBuilder()
    out = tmp_path_factory.mktemp("tamper")
    patches = _patches(module_source)
    own_test = _new_file("toolz/tests/test_mine.py",
                         "from toolz import dissoc\n\n\ndef test_mine():\n    assert dissoc({1: 2}, 1) == {}\n")
    patches["gold"] = (task.patch, Defences())
    patches["gold+own-test"] = (task.patch + own_test, Defences())

    def grade(item):
        name, (patch, defences) = item
        grader = Grader(builder, out, defences=defences)
        return name, grader.grade(task, patch, label=name.replace("/", "_"))

    return dict(map_unordered(grade, patches.items(), workers=2))


def _says(result: GradeResult) -> str:
    return json.dumps({"resolved": result.resolved, "problems": result.problems,
                       "tamper": result.tamper_reasons, "set_aside": result.set_aside,
                       "error": result.error, "log": result.log_path})


def _worked(result: GradeResult) -> None:
    assert result.resolved and result.error is None, "the attack must work without its defence: " + _says(result)


def _stopped(result: GradeResult) -> None:
    assert not result.resolved and result.error is None, _says(result)


def test_honest_patches_still_resolve(graded):
    for name in ("gold", "gold+own-test"):
        assert graded[name].resolved and not graded[name].tampered, _says(graded[name])


def test_report_rewritten_at_import_trips_the_wires(graded):
    _worked(graded["rewrite/off"])
    on = graded["rewrite/on"]
    _stopped(on)
    assert on.tampered and any("trip-wire" in r for r in on.tamper_reasons), _says(on)


def test_a_context_diff_is_refused_not_applied_unscanned(graded):
    """With the rule off, GNU patch applies a context diff that the static scan cannot read
    (here a report rewriter, with trip-wires off to isolate the rule): resolved, no flags.
    With it on, it is refused before any tool reads it."""
    off = graded["context-diff/off"]
    _worked(off)
    assert off.flags == [], off.flags
    on = graded["context-diff/on"]
    _stopped(on)
    assert any("not a unified diff" in p for p in on.problems), _says(on)


def test_a_tamperer_that_spares_copy_shaped_tests_is_caught_by_twins(graded):
    """Code under test can read every test's source: a ``finally`` copy is recognisable, so
    a rewriter that passes every failing test but those gets through with copies alone. A
    twin is a FAIL_TO_PASS test verbatim but for its name and one literal: passing it too
    trips the wire."""
    _worked(graded["spare-copies/off"])
    on = graded["spare-copies/on"]
    _stopped(on)
    assert on.tampered and any("trip-wire" in r for r in on.tamper_reasons), _says(on)


def test_a_tamperer_that_spares_every_test_with_a_twin_fails_the_original_with_it(graded):
    """Leaving alone both tests of each near-identical pair keeps a twin's original failing:
    the run is not resolved (whichever one of a pair a tamperer passes, it has even odds of
    passing the twin)."""
    _stopped(graded["spare-twins/on"])


def test_fake_session_then_exit_is_caught_by_wires_and_junit(graded):
    _worked(graded["fake-session/off"])
    on = graded["fake-session/on"]
    _stopped(on)
    assert on.tampered, _says(on)
    assert any("trip-wire" in r for r in on.tamper_reasons), _says(on)
    assert any("junit" in r for r in on.tamper_reasons), _says(on)


def test_fake_summary_at_exit_contradicts_pytests_junit_report(graded):
    _worked(graded["atexit/off"])
    for name in ("atexit/junit-only", "atexit/on"):
        _stopped(graded[name])
        assert graded[name].tampered and any("junit" in r for r in graded[name].tamper_reasons), \
            _says(graded[name])


def test_a_forged_result_cannot_reach_the_host(graded):
    """The host takes the result the wrapper sends on its stdout. The tests' code writes a
    forged one (marker, passing result, passing log) into every stdout and stderr it can
    open: its own lead to pytest's captures or the wrapper's pipes (the tests' log, which
    the host reads as data, never as a result), and the kernel refuses it those of root's
    processes (init, the wrapper)."""
    result = graded["forged-result/channel-only"]
    _stopped(result)
    log = Path(result.log_path).read_text()
    line = next(l for l in log.splitlines() if l.startswith("RATCHET-ATTACK "))
    tried = json.loads(line.split(" ", 1)[1])
    roots = [t for t in tried if t[1] == 0]
    assert {t[0] for t in roots} >= {"1"} and len({t[0] for t in roots}) >= 2, tried
    assert all(t[3] == 13 for t in roots), tried  # EACCES: not one root stdout opened
    assert any(t[3] == "written" for t in tried), tried  # it wrote where it could: its own


@pytest.mark.parametrize("name", ["pytest.toml", ".pytest.toml"])
def test_pytest_toml_config_is_set_aside(graded, name):
    _worked(graded[f"{name}/off"])
    on = graded["toml/on"]
    _stopped(on)
    assert {"pytest.toml", ".pytest.toml"} <= {i["path"] for i in on.set_aside}, _says(on)


@pytest.mark.parametrize("name", ["pytest.py", "_pytest", "pprint.py"])
def test_modules_that_shadow_the_runner_or_stdlib_are_refused(graded, name):
    _worked(graded[f"{name}/off"])
    on = graded["shadows/on"]
    _stopped(on)
    refusal = " ".join(on.problems)
    assert not on.patch_applied and "refused" in refusal, _says(on)
    for module in ("'pytest'", "'_pytest'", "'pprint'"):
        assert module in refusal, _says(on)


def test_safe_path_alone_keeps_a_root_stdlib_shadow_out(graded):
    _stopped(graded["pprint.py/safe-path-only"])


def test_pytest11_entry_point_in_egg_info_is_refused(graded):
    _worked(graded["egg-info/off"])
    on = graded["egg-info/on"]
    _stopped(on)
    assert not on.patch_applied and "packaging metadata" in " ".join(on.problems), _says(on)


def test_hook_planted_under_git_by_the_patch_fallback(graded):
    """GNU patch writes .git/hooks/post-checkout where git apply refuses; the hook runs
    at the restore of the test files (after the guard) and re-creates a root conftest.py."""
    _worked(graded["git-hook/off"])
    _stopped(graded["git-hook/hooks-off-only"])  # written, but git never runs it
    on = graded["git-hook/on"]
    _stopped(on)
    assert "inside .git" in " ".join(on.problems) and not on.patch_applied, _says(on)


def test_git_runs_no_hook_or_fsmonitor_the_package_writes_at_test_time(task):
    """Code under test can write .git/hooks and .git/config; git, as the wrapper runs it,
    runs neither (and the wrapper runs no git after the tests at all)."""
    from benchmark import _docker
    from benchmark._images import SANDBOX_USER
    from benchmark._wrapper import git_env

    image = ImageBuilder().ensure_task(task)
    plant = ("cd /testbed && printf '#!/bin/sh\\ntouch /tmp/hook-ran\\n' > .git/hooks/post-checkout"
             " && chmod +x .git/hooks/post-checkout"
             " && printf '#!/bin/sh\\ntouch /tmp/fsmonitor-ran\\n' > /tmp/fsm && chmod +x /tmp/fsm"
             " && git config core.fsmonitor /tmp/fsm"
             " && git checkout HEAD -- toolz/dicttoolz.py && git status --porcelain >/dev/null;"
             " ls /tmp/hook-ran /tmp/fsmonitor-ran 2>/dev/null | sort")
    outcomes = {}
    for hooks_off in (False, True):
        env = {k: v for k, v in git_env({}, hooks_off=hooks_off).items()}
        run = _docker.run_script(image, plant, timeout_s=60, user=SANDBOX_USER, environment=env)
        outcomes[hooks_off] = [w for w in run.log.split() if w.startswith("/tmp/")]
    assert outcomes[False] == ["/tmp/fsmonitor-ran", "/tmp/hook-ran"], outcomes
    assert outcomes[True] == [], outcomes


FORK_BOMB = ("\nimport os as _os, sys as _sys\nif '_pytest' in _sys.modules:\n"
             "    while True:\n        try:\n            _os.fork()\n        except OSError:\n"
             "            pass\n")


def test_fork_bomb_at_import_ends_within_ten_seconds_of_the_limit(task, module_source, tmp_path):
    limit = 10
    bomb = task.model_copy(update={"environment": task.environment.model_copy(
        update={"timeout_s": limit})})
    code = FORK_BOMB
    started = time.monotonic()
    result = Grader(ImageBuilder(), tmp_path).grade(bomb, _append(MODULE, module_source, code))
    took = time.monotonic() - started
    assert took < limit + 10, f"{took:.1f}s: {_says(result)}"
    _stopped(result)
    assert any("timed out" in p for p in result.problems), _says(result)


def test_fork_bomb_runs_past_the_limit_without_the_wall_clock_kill(task, module_source, tmp_path):
    """The same bomb, the wall-clock kill switched off: the grading is still going well past
    its limit (it would go on for good). Held to a small pids and CPU share so the bomb
    cannot load the machine, and stopped by the test; then the kill switched on ends the same
    grading under the same limits within ten seconds of its limit."""
    from benchmark import _docker

    limit = 5
    bomb = task.model_copy(update={"environment": task.environment.model_copy(
        update={"timeout_s": limit})})
    code = FORK_BOMB
    patch = _append(MODULE, module_source, code)
    small = _docker.SandboxLimits(pids=96, cpus=0.5)
    took: dict[bool, float] = {}
    for kill in (False, True):
        grader = Grader(ImageBuilder(), tmp_path / str(kill), limits=small,
                        defences=Defences(wall_clock_kill=kill))
        results: list[GradeResult] = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: results.append(grader.grade(bomb, patch)),
                                  daemon=True)
        worker.start()
        worker.join(limit + 15)
        took[kill] = time.monotonic() - started
        if worker.is_alive():  # still grading: stop it from outside, as no defence did
            owner = _docker._labels()
            for container in _docker.connect().containers.list(filters={"label": [
                    "ratchet.grading=1", *(f"{k}={v}" for k, v in owner.items())]}):
                container.kill()
            worker.join(60)
        assert results and not results[0].resolved, results
    assert took[False] >= limit + 15, took  # without the kill: still running when stopped
    assert took[True] < limit + 10, took


_MEASURE = textwrap.dedent("""\
    import json, resource, sys
    from pathlib import Path
    from benchmark import Grader, ImageBuilder, load_suite
    from benchmark._grader import Defences
    task = next(t for t in load_suite("quickstart").tasks if t.instance_id == sys.argv[1])
    patch = Path(sys.argv[2]).read_text()
    defences = Defences(output_cap=sys.argv[4] == "on")
    grader = Grader(ImageBuilder(), Path(sys.argv[3]), defences=defences)
    grader.grade(task, task.patch, label="warm")  # imports and the first grading's costs
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = grader.grade(task, patch, label="loud")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_mb": (after - before) / 1024, "resolved": result.resolved,
                      "problems": result.problems, "error": result.error}))
    """)


def test_huge_output_is_capped_and_the_graders_memory_stays_bounded(task, module_source, tmp_path):
    """300 MB printed at import: with the cap the output is dropped past 16 MiB, the run is
    unresolved and the grading process grows by well under 200 MB; without it, the whole
    output reaches the grading process."""
    code = textwrap.dedent("""
        import sys as _sys
        if "_pytest" in _sys.modules:
            import gc as _gc
            for _capman in [o for o in _gc.get_objects() if type(o).__name__ == "CaptureManager"]:
                _capman.suspend_global_capture(in_=True)  # past pytest's capture
            _line = "x" * 1023 + "\\n"
            for _ in range(300 * 1024):
                _sys.stdout.write(_line)
            _sys.stdout.flush()
        """)
    patch_file = tmp_path / "loud.diff"
    patch_file.write_text(_append(MODULE, module_source, code))
    root = Path(__file__).resolve().parents[2]
    figures = {}
    for cap in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", _MEASURE, TASK_ID, str(patch_file),
                              str(tmp_path / cap), cap], capture_output=True, text=True,
                             cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        figures[cap] = json.loads(out.stdout.strip().splitlines()[-1])
    on, off = figures["on"], figures["off"]
    assert not on["resolved"] and on["error"] is None, figures
    assert any("more than" in p for p in on["problems"]), figures
    assert on["grew_mb"] < 200, figures
    assert off["grew_mb"] > 200, figures
    print(f"grading process growth: {on['grew_mb']:.0f} MB with the cap, {off['grew_mb']:.0f} MB without")


def test_prebuilt_image_with_a_root_owned_testbed_still_grades(task, tmp_path):
    """An official image's /testbed is root's: the wrapper gives it to the sandbox user,
    and gold still resolves (empty does not), the tests running unprivileged."""
    import docker

    from benchmark import _docker

    base = ImageBuilder().ensure_task(task)
    tag = f"ratchet-test/prebuilt:{os.getpid()}"
    _docker.commit_script(base, "chown -R root:root /testbed", tag=tag,
                          log_path=tmp_path / "build.log")
    try:
        prebuilt = task.model_copy(update={"image": tag, "source": None})
        grader = Grader(ImageBuilder(), tmp_path / "grades")
        gold, empty = (grader.grade(prebuilt, p, label=l) for p, l in ((task.patch, "gold"), ("", "empty")))
        assert gold.resolved and not gold.tampered, _says(gold)
        assert not empty.resolved and empty.tests_ran, _says(empty)
        report = json.loads((Path(gold.log_path).parent / "report.json").read_text())
        assert report[task.instance_id]["ratchet"]["tampered"] is False
        assert report[task.instance_id]["ratchet"]["tamper_reasons"] == []
    finally:
        docker.from_env().images.remove(tag, force=True)

