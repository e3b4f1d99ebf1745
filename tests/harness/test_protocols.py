"""Every seam is declared in `harness.protocols`, with a registry of its implementations."""

from __future__ import annotations

import typing

import pytest

from harness.errors import BadInput, UnknownImplementation
from harness.protocols import (
    ACCEPTANCE_RULES,
    ENVIRONMENTS,
    EXECUTORS,
    MODEL_CLIENTS,
    PARENT_SELECTORS,
    PROPOSERS,
    AcceptanceRule,
    Environment,
    Executor,
    ModelClient,
    ParentSelector,
    Proposer,
)
from harness.loop.runfile import RunConfig

SEAMS = [(ENVIRONMENTS, Environment), (PROPOSERS, Proposer), (ACCEPTANCE_RULES, AcceptanceRule),
         (PARENT_SELECTORS, ParentSelector), (EXECUTORS, Executor), (MODEL_CLIENTS, ModelClient)]


def _members(protocol: type) -> set[str]:
    """The methods a Protocol declares, its bases' too (Executor extends GradingExecutor)."""
    names = set()
    for klass in protocol.__mro__:
        if klass is typing.Protocol or klass is typing.Generic or klass is object:
            continue
        names |= {n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")}
    return names


@pytest.mark.parametrize("registry,protocol", SEAMS, ids=[r.seam for r, _ in SEAMS])
def test_every_registered_implementation_loads_and_matches_its_seam(registry, protocol):
    """Each name resolves to a class that has every method its Protocol declares."""
    assert list(registry), registry.seam
    for name in registry:
        implementation = registry.load(name)
        missing = _members(protocol) - set(dir(implementation))
        assert not missing, f"{registry.seam} {name!r} lacks {sorted(missing)}"


@pytest.mark.parametrize("registry", [r for r, _ in SEAMS], ids=[r.seam for r, _ in SEAMS])
def test_an_unknown_name_fails_with_the_known_ones(registry):
    """A typo is one clear error (a `BadInput`, also a ValueError) listing what exists."""
    with pytest.raises(UnknownImplementation) as caught:
        registry.load("no-such-thing")
    assert isinstance(caught.value, (BadInput, ValueError))
    assert f"unknown {registry.seam} 'no-such-thing'" in str(caught.value)
    assert all(name in str(caught.value) for name in registry)


def test_the_run_file_offers_exactly_the_registered_proposers():
    """The run file's `proposer` choices and the registry stay one list."""
    choices = typing.get_args(RunConfig.model_fields["proposer"].annotation)
    assert set(choices) == set(PROPOSERS)
