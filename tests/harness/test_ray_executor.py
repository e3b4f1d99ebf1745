"""``--executor ray`` on a real Ray cluster on this machine: a head and worker nodes, each a
real ``ray start`` (`harness.run.ray_cluster.LocalCluster`), real Docker sandboxes, the real
CLI. Tasks land on both nodes, verdicts equal the local executor's task by task, a node
killed mid-run loses and duplicates nothing, and a node lacking an image builds it from
the controller's inputs without the network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmark import ImageBuilder, load_suite, task_image_tag
from benchmark import base_image_tag
from harness.loop.journal import Journal
from harness.models.oracle import ORACLE_USAGE
from tests.conftest import ROOT

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("RATCHET_REQUIRE_DOCKER") == "1":
            pytest.fail("Ray is not installed (CI installs ratchet[ray]; Ray tests may not skip)")
        pytest.skip("Ray is not installed: pip install 'ratchet[ray]'")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, docker_daemon):
    """A head and a worker node "b", one sandbox slot each."""
    _need_ray()
    from harness.run.ray_cluster import LocalCluster

    with LocalCluster.start(tmp_path_factory.mktemp("ray"), slots=1) as made:
        made.add_node("b", slots=1)
        yield made


def _ratchet(cluster, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd,
                          env={**env, **cluster.client_env, "COLUMNS": "200"})


def test_validate_on_the_cluster_agrees_with_the_local_executor_task_by_task(cluster):
    verdicts = {}
    for executor in ("local", f"ray:{cluster.address}"):
        out = _ratchet(cluster, "bench", "validate", "--suite", "quickstart", "--executor",
                       executor, "--run-id", executor.split(":")[0])
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "9/9 valid" in out.stdout
        path = Path(os.environ["RATCHET_RUNS"]) / "bench" / executor.split(":")[0] / "validation.json"
        verdicts[executor.split(":")[0]] = json.loads(path.read_text())
    assert "ray: 2 node(s), 2 sandbox slot(s)" in out.stdout
    local, ray = verdicts["local"], verdicts["ray"]
    assert local.keys() == ray.keys() and len(ray) == 9
    for task in local:
        assert ray[task]["valid"] == local[task]["valid"] is True
        for label in ("gold", "empty"):
            assert ray[task][label]["resolved"] == local[task][label]["resolved"]
            assert ray[task][label]["tests_status"] == local[task][label]["tests_status"]
            log = Path(ray[task][label]["ratchet"]["log"])  # kept on the controller
            assert log.is_file() and "short test summary" in log.read_text()


def test_bench_run_lands_on_both_nodes_and_counts_every_token_once(cluster):
    out = _ratchet(cluster, "bench", "run", "--suite", "quickstart", "--scripted", "oracle",
                   "--executor", f"ray:{cluster.address}", "--run-id", "oracle")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = Path(os.environ["RATCHET_RUNS"]) / "bench" / "oracle"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resolved"] == summary["tasks"] == 9  # as on the local pool (test_bench_run)
    nodes = Counter(r["node"] for r in summary["per_task"].values())
    assert set(nodes) == {"head", "b"}, nodes
    # one ledger on the controller: exactly the scripted usage of 3 calls per task
    assert summary["prompt_tokens"] == 27 * ORACLE_USAGE.prompt_tokens
    assert summary["completion_tokens"] == 27 * ORACLE_USAGE.completion_tokens
    for task_id, result in summary["per_task"].items():
        log = [json.loads(line) for line in Path(result["trajectory"]).read_text().splitlines()]
        assert [r["node"] for r in log] == [result["node"]] * 3
        assert (run_dir / "agent-logs" / f"{task_id}.log").is_file()
        assert Path(result["grade_log"]).is_file()


def test_a_node_lost_mid_run_is_retried_elsewhere_and_journaled_once(cluster, tmp_path):
    """The loop's seed evaluation on three nodes; node "c" is killed (SIGKILL, all its
    processes) while a task runs there. Every task is journaled exactly once, the lost one
    from another node, and the verdicts are those of the local pool."""
    cluster.add_node("c", slots=1)
    init = _ratchet(cluster, "init", str(tmp_path / "ws"))
    assert init.returncode == 0, init.stderr
    workspace = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen(
        [RATCHET, "run", "--suite", "quickstart", "--generations", "0", "--scripted", "demo",
         "--run-id", "lost", "--executor", f"ray:{cluster.address}"],
        cwd=workspace, env={**env, **cluster.client_env, "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    trajectories = workspace / "runs" / "lost" / "trajectories"
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for path in trajectories.glob("*.jsonl") if trajectories.exists() else ():
            if '"node": "c"' in path.read_text():
                victim = path.stem.split(".", 1)[1]
                break
        time.sleep(0.05)
    assert victim, "no task ran on node c"
    cluster.kill_node("c")
    assert proc.wait(timeout=300) == 0, "".join(output)[-3000:]
    reader.join(timeout=10)
    text = "".join(output)
    assert f"{victim}: lost its Ray node" in text and "starting it again on another node" in text

    events = Journal.read(workspace / "runs" / "lost" / "journal.jsonl")
    evaluated = [e for e in events if e["event"] == "task_evaluated"]
    tasks = load_suite("quickstart").tasks
    assert sorted(e["task_id"] for e in evaluated) == sorted(t.instance_id for t in tasks)
    by_task = {e["task_id"]: e["result"] for e in evaluated}
    assert by_task[victim]["node"] in ("head", "b")
    calls = [json.loads(line)["node"] for line in (trajectories / f"gen-0000.{victim}.jsonl")
             .read_text().splitlines()]
    retried = calls.index(by_task[victim]["node"])  # the lost attempt's calls, then the new one's
    assert set(calls[:retried]) == {"c"} and set(calls[retried:]) == {by_task[victim]["node"]}
    # the demo's agent model fences some packages' commands ```sh, which the seed agent cannot
    # read: the same verdicts as on the local pool (test_loop, the demo)
    from harness.cli.demo import SH_FENCED_REPOS

    resolved = {task for task, result in by_task.items() if result["resolved"]}
    assert resolved == {t.instance_id for t in tasks
                        if t.instance_id.split("__")[0] not in SH_FENCED_REPOS}


@pytest.fixture
def fresh_namespace(monkeypatch, docker_daemon):
    """An image namespace of its own (`RATCHET_IMAGE_NAMESPACE`) holding only the base image
    (tagged: same recipe, same key), so env and task images must be built; removed after."""
    import docker

    client = docker.from_env()
    base = ImageBuilder().ensure_base()
    namespace = f"ratchet-raytest-{os.getpid()}"
    monkeypatch.setenv("RATCHET_IMAGE_NAMESPACE", namespace)
    client.images.get(base).tag(base_image_tag())
    yield client
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(namespace + "/"):
                client.images.remove(tag)


def _one_task_suite(tmp_path: Path):
    task = next(t for t in load_suite("quickstart").tasks if t.instance_id.startswith("inflection"))
    suite = tmp_path / "one.jsonl"
    suite.write_text(task.model_dump_json(exclude_none=True) + "\n")
    return task, suite


def test_a_node_without_the_image_builds_it_from_the_controllers_inputs(tmp_path, fresh_namespace):
    """The only node with a sandbox slot has an empty cache and no package index; it builds
    the env and task images from the tree and wheels the controller put in the object
    store, and arrives at the controller's tag."""
    _need_ray()
    from harness.run.ray_cluster import LocalCluster

    task, suite = _one_task_suite(tmp_path)
    node_cache = tmp_path / "node-cache"
    offline = {"RATCHET_CACHE": str(node_cache), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
               "PIP_NO_INDEX": "1"}  # a download on the node would fail
    with LocalCluster.start(tmp_path / "ray", slots=0) as cluster:
        cluster.add_node("builder", slots=1, env=offline)
        out = _ratchet(cluster, "bench", "validate", "--suite", str(suite),
                       "--executor", f"ray:{cluster.address}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1/1 valid" in out.stdout and "images built: 0" in out.stdout  # not here
    assert fresh_namespace.images.get(task_image_tag(task)).tags  # the node built it, this tag
    logs = {p.name.split("_")[1] for p in (node_cache / "logs" / "build").iterdir()}
    assert logs == {"env", "task"}
    shipped = list((node_cache / "wheelhouse").iterdir())
    assert len(shipped) >= 2 and all((p / ".complete").exists() for p in shipped)


def test_prepare_builds_on_every_node_once_per_machine(cluster, tmp_path, fresh_namespace):
    """`bench prepare` runs one build on each node; the two nodes share this machine's
    daemon and cache, so one builds and the other finds the images (the machine lock)."""
    task, suite = _one_task_suite(tmp_path)
    out = _ratchet(cluster, "bench", "prepare", "--suite", str(suite),
                   "--executor", f"ray:{cluster.address}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in out.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {"head", "b"}, out.stdout
    assert all(ready == "1" for ready, _ in rows.values())
    assert sorted(built for _, built in rows.values()) == ["0", "2"]  # env + task, once
    assert fresh_namespace.images.get(task_image_tag(task)).tags


def test_executor_errors_name_the_fix(cluster):
    out = _ratchet(cluster, "bench", "validate", "--suite", "quickstart", "--executor", "slurm")
    assert out.returncode == 2 and "unknown executor 'slurm'" in out.stderr
    out = _ratchet(cluster, "bench", "validate", "--suite", "quickstart",
                   "--executor", "ray:127.0.0.1:9")
    assert out.returncode == 2
    assert "no Ray cluster at 127.0.0.1:9" in out.stderr and "ray start --head" in out.stderr


def test_ctrl_c_then_kill_9_then_resume_on_the_cluster(cluster, tmp_path):
    """As with the local pool: Ctrl-C lets the runs in flight finish and stops, kill -9
    loses only unjournaled runs, and a resume finishes with no task evaluated twice."""
    assert _ratchet(cluster, "init", str(tmp_path / "ws")).returncode == 0
    workspace = tmp_path / "ws"
    journal = workspace / "runs" / "s1" / "journal.jsonl"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
           **cluster.client_env, "COLUMNS": "200"}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([RATCHET, *args], cwd=workspace, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def wait_for(evaluated: int) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_text().count('"task_evaluated"') >= evaluated:
                return
            time.sleep(0.1)
        raise AssertionError(f"fewer than {evaluated} tasks evaluated in time")

    proc = start("run", "--suite", "quickstart", "--generations", "0", "--scripted", "demo",
                 "--run-id", "s1", "--executor", f"ray:{cluster.address}")
    wait_for(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, stdout[-2000:] + stderr[-2000:]
    assert "stopping after the tasks in flight" in stderr and "ratchet resume s1" in stdout
    stopped = Journal.read(journal)
    assert stopped[-1]["event"] == "run_stopped"
    done = sum(e["event"] == "task_evaluated" for e in stopped)
    assert 1 <= done < 9

    proc = start("resume", "s1")
    wait_for(done + 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = _ratchet(cluster, "resume", "s1", cwd=workspace)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    events = Journal.read(journal)
    evaluated = Counter(e["task_id"] for e in events if e["event"] == "task_evaluated")
    assert len(evaluated) == 9 and set(evaluated.values()) == {1}
    assert events[-1]["event"] == "run_finished"


def test_a_ray_instance_started_here_grades_like_the_local_pool(tmp_path, docker_daemon):
    """``--executor ray`` (no address): a throwaway Ray instance on this machine."""
    _need_ray()
    tasks = load_suite("quickstart").tasks[:2]
    suite = tmp_path / "two.jsonl"
    suite.write_text("".join(t.model_dump_json(exclude_none=True) + "\n" for t in tasks))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"instance_id": t.instance_id, "model_name_or_path": "m",
                                               "model_patch": patch}) + "\n"
                                   for t, patch in zip(tasks, (tasks[0].patch, "not a diff\n"))))
    reports = {}
    for executor in ("local", "ray"):
        out = subprocess.run([RATCHET, "bench", "grade", "--suite", str(suite), "--predictions",
                              str(predictions), "--executor", executor, "--run-id", executor],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "resolved 1/2" in out.stdout
        path = Path(os.environ["RATCHET_RUNS"]) / "bench" / executor / "report.json"
        reports[executor] = json.loads(path.read_text())
    assert "ray: 1 node(s), 2 sandbox slot(s)" in out.stdout
    for key in ("resolved_ids", "unresolved_ids", "error_ids", "completed_ids"):
        assert reports["ray"][key] == reports["local"][key]
    assert reports["ray"]["resolved_ids"] == [tasks[0].instance_id]


def test_a_gateway_address_the_nodes_cannot_use_is_named_before_any_task_runs(cluster):
    env = {"RATCHET_GATEWAY_HOST": "203.0.113.7"}  # TEST-NET-3: not an address of this machine
    out = subprocess.run([RATCHET, "bench", "run", "--suite", "quickstart", "--scripted", "oracle",
                          "--executor", f"ray:{cluster.address}", "--run-id", "nogw"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **cluster.client_env, **env, "COLUMNS": "200"})
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "cannot serve the gateway for the nodes at 203.0.113.7:0" in out.stderr
    assert "RATCHET_GATEWAY_HOST" in out.stderr
    assert list((Path(os.environ["RATCHET_RUNS"]) / "bench" / "nogw" / "results").glob("*.json")) == []
