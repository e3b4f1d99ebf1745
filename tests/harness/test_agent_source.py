"""The agent a cluster node runs is exactly the controller's: packed, sent, unpacked once,
and checked against its content hash."""

from __future__ import annotations

import io
import tarfile

import pytest

from harness.run.agent_source import AgentSourceError, pack_agent, resolve_agent, unpack_agent
from tests.conftest import ROOT


def test_an_agent_round_trips_to_the_same_tree_hash(tmp_path):
    agent = resolve_agent(str(ROOT / "agent_seed"))
    data = pack_agent(agent)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert "agent_seed/__main__.py" in names and not any("__pycache__" in n for n in names)
    target = unpack_agent(data, agent.tree_hash, tmp_path / "agents")
    assert target == tmp_path / "agents" / agent.tree_hash
    assert resolve_agent(str(target)).tree_hash == agent.tree_hash
    assert (target / "agent_seed" / "__main__.py").stat().st_mode & 0o777 == 0o644
    assert unpack_agent(data, agent.tree_hash, tmp_path / "agents") == target  # once per node


def test_an_agent_that_is_not_the_one_named_is_refused(tmp_path):
    agent = resolve_agent(str(ROOT / "agent_seed"))
    (agent.directory / "agent_seed" / "__main__.py").write_text("print('tampered')\n")
    with pytest.raises(AgentSourceError, match=f"not {agent.tree_hash}"):
        unpack_agent(pack_agent(agent), agent.tree_hash, tmp_path / "agents")
    assert list((tmp_path / "agents").iterdir()) == []  # nothing half-unpacked stays
