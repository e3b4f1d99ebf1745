"""Official rows find their images by the official name: pulled from a real registry (Debian's
``docker-registry``, started here on a free loopback port) when absent, one clear error when no
registry has them. The image is laid out like an official eval image (`swebench_layout`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.benchmark.swebench_layout import OFFICIAL_ROWS, build_layout_image, official_rows

RATCHET = str(Path(sys.executable).with_name("ratchet"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def registry(tmp_path: Path):
    """A real image registry on 127.0.0.1:PORT (loopback registries need no TLS settings)."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("docker-registry is not installed (`apt-get install -y docker-registry`; .ci/setup)")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"docker-registry did not start: {(tmp_path / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ratchet(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd, timeout=1800,
                          env={**os.environ, "COLUMNS": "240", **env})


def _official_name(namespace: str) -> str:
    instance = official_rows()[0]["instance_id"].replace("__", "_1776_")
    return f"{namespace}/sweb.eval.x86_64.{instance}:latest"


@pytest.mark.docker
def test_validate_pulls_the_official_image_from_a_registry_and_validates(docker_daemon, registry,
                                                                        tmp_path: Path):
    """Done-when of issue 18: `bench validate --suite FILE.jsonl` on a file of the official
    fields only finds its image (absent here; pushed under its official name to a real local
    registry) by the derived name, pulls it, and validates: gold resolves, empty does not."""
    import docker

    client = docker.from_env(timeout=600)
    image, head = build_layout_image()
    assert head == official_rows()[0]["base_commit"], (
        f"the layout image's HEAD {head} is not the row's base_commit; rewrite the row's "
        f"base_commit in {OFFICIAL_ROWS}")
    namespace = f"{registry}/swebench"
    remote = _official_name(namespace)
    repository, _, tag = remote.rpartition(":")
    client.images.get(image).tag(repository, tag)
    started = time.monotonic()
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    push_s = time.monotonic() - started
    client.images.remove(remote)  # only the name goes; ratchet must pull it back
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(remote)
    try:
        started = time.monotonic()
        out = _ratchet("bench", "validate", "--suite", str(OFFICIAL_ROWS), "--run-id", "pulled",
                       cwd=tmp_path, RATCHET_SWEBENCH_NAMESPACE=namespace,
                       RATCHET_RUNS=str(tmp_path / "runs"))
        took = time.monotonic() - started
        text = out.stdout + out.stderr
        assert out.returncode == 0, text
        assert f"pulling {remote}" in text and f"pulled {remote}" in text
        client.images.get(remote)  # it is here now, by the official name
        validation = json.loads((tmp_path / "runs" / "bench" / "pulled" / "validation.json").read_text())
        row = validation[official_rows()[0]["instance_id"]]
        assert row["valid"] and row["gold"]["resolved"] and not row["empty"]["resolved"], row
        assert "1/1 valid" in " ".join(text.split())
        pulled = re.search(rf"pulled {re.escape(remote)} in ([\d.]+)s", text)
        assert pulled, text
        print(f"push {push_s:.1f}s; pull {pulled.group(1)}s; validate with the pull {took:.1f}s")
    finally:
        try:
            client.images.remove(remote)
        except docker.errors.ImageNotFound:
            pass


@pytest.mark.docker
def test_a_missing_official_image_with_no_registry_is_one_clear_error(docker_daemon, tmp_path: Path):
    """Nothing listens where the namespace points: the task is an infrastructure error that
    names the image and both fixes (a registry/namespace, or building it), never a verdict."""
    namespace = f"127.0.0.1:{_free_port()}/swebench"
    out = _ratchet("bench", "validate", "--suite", str(OFFICIAL_ROWS), "--run-id", "nopull",
                   cwd=tmp_path, RATCHET_SWEBENCH_NAMESPACE=namespace,
                   RATCHET_RUNS=str(tmp_path / "runs"))
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0, text
    assert _official_name(namespace) in text
    assert "RATCHET_SWEBENCH_NAMESPACE" in text and "prepare_images" in text
