"""The patch leaves the agent sandbox only through the harness: attacks on the old way of
taking it (``git diff > /tmp/ratchet-patch.diff`` in the sandbox, read back by path), each
shown to work against that way (the defence off) and to fail against the harness's way.

Each attacker is a real agent process (a package named agent_seed) run in a real container
through `DockerEnvironment.run_agent`; it makes one honest change (``real.txt``) and then
tries to make the harness take something else.
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import pytest

from benchmark import ImageBuilder, load_tasks
from benchmark import _docker
from benchmark._agent_env import _PROBLEM, DockerEnvironment
from benchmark._images import AGENT_VENV, SANDBOX_USER
from tests.conftest import DATA

pytestmark = pytest.mark.docker

OLD_PATCH = "/tmp/ratchet-patch.diff"
FORGED = "FORGED-PATCH-CONTENT"

ATTACKS = {
    # the agent pre-creates the old patch path read-only, holding what it wants graded
    "read-only patch path": f"printf '%s\\n' {FORGED} > {OLD_PATCH}; chmod 444 {OLD_PATCH}",
    # ... as a symlink (the old reader crashed on it: an internal error, not a verdict)
    "symlink at the patch path": f"ln -s /etc/hostname {OLD_PATCH}; mkdir -p /tmp/agent-out; "
                                 "ln -s /etc/shadow /tmp/agent-out/trajectory.json",
    # ... as a FIFO that a helper left behind drains (the old reader got nothing)
    "FIFO at the patch path": f"mkfifo {OLD_PATCH}; mkdir -p /tmp/agent-out; "
                              "mkfifo /tmp/agent-out/trajectory.json; "
                              f"(setsid sh -c 'cat {OLD_PATCH} > /dev/null' &)",
    # .git/config names an external diff program that prints what the agent wants
    "diff.external in .git/config": textwrap.dedent(f"""\
        printf '#!/bin/sh\\necho {FORGED}\\n' > .git/ext.sh; chmod +x .git/ext.sh
        git config diff.external /testbed/.git/ext.sh"""),
    # a textconv driver rewrites what the diff shows of a file
    "textconv in .git/config": textwrap.dedent(f"""\
        printf '#!/bin/sh\\necho {FORGED}\\n' > .git/tc.sh; chmod +x .git/tc.sh
        echo '*.txt diff=forge' > .gitattributes
        git config diff.forge.textconv /testbed/.git/tc.sh"""),
    # a hook run by `git add` stages the fix in the index: the diff shows a fix the
    # worktree does not hold
    "post-index-change hook": textwrap.dedent("""\
        sed 's/(11, 12)/(11, 12, 13)/' inflection/__init__.py > /tmp/fixed.py
        cat > .git/hooks/post-index-change <<'HOOK'
        #!/bin/sh
        [ -e /tmp/hooked ] && exit 0
        touch /tmp/hooked
        git update-index --cacheinfo "100644,$(git hash-object -w /tmp/fixed.py),inflection/__init__.py"
        HOOK
        chmod +x .git/hooks/post-index-change"""),
}


def _succeeded(attack: str, patch: str | None, error: Exception | None, timed_out: bool) -> bool:
    """Did the harness end up with something other than the agent's honest change?"""
    if error is not None or timed_out:
        return True
    assert patch is not None
    return (FORGED in patch or "(11, 12, 13)" in patch
            or "+++ b/real.txt" not in patch)


def _attacker(tmp: Path, attack: str) -> Path:
    agent_dir = tmp / attack.replace(" ", "-").replace("/", "")
    package = agent_dir / "agent_seed"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import subprocess\n"
        f"subprocess.run(['bash', '-c', 'echo real > real.txt\\n' + {ATTACKS[attack]!r}],\n"
        "               cwd='/testbed', check=True)\n")
    for item in (agent_dir, package, *package.iterdir()):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return agent_dir


def _old_way(image: str, task, agent_dir: Path, socket: Path, *, neutral_diff: bool):
    """The defence off: the agent, then `git diff > path` in the same sandbox as the same
    user, the file read back by path (the code this module's defence replaced)."""
    flags = "--no-ext-diff --no-textconv" if neutral_diff else ""
    script = f"""set -u
cd /agent
timeout -k 5 60 {AGENT_VENV}/bin/python -m agent_seed run
cd /testbed
git add -A >/dev/null 2>&1
git -c core.quotepath=off diff --cached --no-color {flags} --binary HEAD > {OLD_PATCH}
"""
    try:
        with _docker._finished_container(
                image, script, archives=[("/", _docker.make_tar({_PROBLEM: "x"}))], timeout_s=60,
                user=SANDBOX_USER, volumes={str(agent_dir): {"bind": "/agent", "mode": "ro"},
                                            str(socket): {"bind": "/run/ratchet/llm.sock", "mode": "rw"}},
                **_docker._hardened(_docker.SandboxLimits())) as (container, _, timed_out, _log):
            stream, _ = container.get_archive(OLD_PATCH)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
                handle = archive.extractfile(archive.next())
                return (handle.read().decode() if handle else ""), None, timed_out
    except Exception as exc:  # what the old harness would have raised: an internal error
        return None, exc, False


@pytest.fixture(scope="module")
def task():
    return load_tasks(DATA / "handwritten.jsonl").tasks[0]


@pytest.fixture(scope="module")
def image(task):
    return ImageBuilder().ensure_task(task)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_patch_collection_attack_works_on_the_old_way_and_fails_on_the_harness_way(
        attack, task, image, tmp_path):
    agent_dir = _attacker(tmp_path, attack)
    socket = tmp_path / "llm.sock"
    socket.touch()
    # the defence off: the agent steers, blocks or crashes the collection
    neutral = attack not in ("diff.external in .git/config", "textconv in .git/config")
    patch, error, timed_out = _old_way(image, task, agent_dir, socket, neutral_diff=neutral)
    assert _succeeded(attack, patch, error, timed_out), (attack, patch, error)
    # the defence on: the harness takes exactly the agent's worktree change, no crash
    run = DockerEnvironment(ImageBuilder(), timeout_s=90).run_agent(
        task, agent_dir, socket_path=socket, model="m")
    assert not _succeeded(attack, run.patch, None, run.timed_out), (attack, run.patch)
    assert run.problems == [] and run.exit_code == 0
    assert "+real" in run.patch and FORGED not in run.patch and "(11, 12, 13)" not in run.patch
    assert run.trajectory is None


def test_an_unreadable_file_is_the_agents_failure_with_the_reason(task, tmp_path):
    """A file the harness cannot read makes no patch, and says why; never an internal error."""
    ATTACKS["unreadable file"] = "echo secret > hidden.txt; chmod 000 hidden.txt"
    try:
        agent_dir = _attacker(tmp_path, "unreadable file")
    finally:
        del ATTACKS["unreadable file"]
    socket = tmp_path / "llm.sock"
    socket.touch()
    run = DockerEnvironment(ImageBuilder(), timeout_s=90).run_agent(
        task, agent_dir, socket_path=socket, model="m")
    assert run.patch == ""
    assert len(run.problems) == 1 and "the patch could not be taken" in run.problems[0]
    assert "hidden.txt" in run.problems[0] and "[ratchet]" in run.log
