"""The packages' layering, read from the source: imports point one way.

`harness → benchmark` through `benchmark`'s public face only (its ``_modules`` are private);
`benchmark` never imports `harness`; `agent_seed` (the evolved agent, run in a sandbox
where neither exists) imports neither; and no module of `harness` or `benchmark` takes part
in an import cycle. Every import counts, also one inside a function (a lazy import is still
a dependency); only ``if TYPE_CHECKING:`` blocks are left out, as they never run.
`agent_seed`'s inner layout is the evolving agent's own (its ``__main__`` and ``selfcheck``
call each other on purpose), so only its boundary is held here.

The measurements (`perf/`) and the harness's and agent's tests (`tests/harness`,
`tests/agent_seed`) are benchmark's clients too and use its public face alike. Only
`tests/benchmark` may import `benchmark._x`: unit tests of benchmark's own internals, as
httpx's tests import `httpx._models`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "benchmark", "agent_seed")
ACYCLIC = ("harness", "benchmark")
CLIENTS = ("perf", "tests/harness", "tests/agent_seed")
"""Code outside the packages held to benchmark's public face; `tests/benchmark` is not."""
HARNESS_LAYERS = ("cli", "read", "loop", "propose", "run", "models", "")
"""harness's subpackages, top down: a module imports only from its own layer or below.
"" is the package's own modules (`errors`, `protocols`), the floor every layer may use."""


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` under `root`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def imported_names(name: str, path: Path) -> list[str]:
    """Every dotted name `name`'s source imports (``from a import b`` gives ``a.b``),
    relative imports resolved, ``if TYPE_CHECKING:`` blocks skipped."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[:len(package) - child.level + 1] + ([base] if base else []))
                names.extend(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return names


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split(".")[1:])


def layering_problems(root: Path) -> list[str]:
    """One line per import that crosses a layer the wrong way."""
    problems = []
    for name, path in modules(root, PACKAGES + CLIENTS).items():
        top = name.split(".")[0]
        for imported in imported_names(name, path):
            target = imported.split(".")[0]
            where = f"{path.relative_to(root)} imports {imported}"
            if top != "benchmark" and target == "benchmark" and _is_private(imported):
                problems.append(f"{where}: benchmark's _modules are private; use its public face "
                                "(benchmark/__init__.py)")
            if top == "benchmark" and target in ("harness", "agent_seed"):
                problems.append(f"{where}: benchmark never imports {target}")
            if top == "agent_seed" and target in ("harness", "benchmark"):
                problems.append(f"{where}: the agent runs where {target} does not exist")
    return problems


def import_graph(root: Path, packages: tuple[str, ...] = ACYCLIC) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (a name inside a module is that module)."""
    known = modules(root, packages)
    graph = {}
    for name, path in known.items():
        edges = set()
        for imported in imported_names(name, path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per module found on one, by a
    depth-first walk; empty when the imports form a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles, path = [], []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_imports_point_one_way_through_public_faces():
    """harness, agent_seed, perf/ and tests/harness never reach into benchmark's private
    modules; benchmark never imports harness or agent_seed; agent_seed imports neither."""
    assert layering_problems(ROOT) == []


def test_no_import_cycle_between_modules():
    """The modules of harness and benchmark form a DAG: each can be read after what it uses."""
    assert import_cycles(import_graph(ROOT)) == []


def layer_problems(root: Path) -> list[str]:
    """One line per import of a harness module from a layer above its own."""
    def layer(name: str) -> int:
        part = (name.split(".") + [""])[1]
        return HARNESS_LAYERS.index(part if part in HARNESS_LAYERS else "")

    return [f"{name} ({layer(name)}) imports {other} ({layer(other)}), a layer above it"
            for name, edges in import_graph(root, ("harness",)).items() for other in sorted(edges)
            if layer(other) < layer(name)]


def test_harness_layers_import_downward_only():
    """cli -> read -> loop -> propose -> run -> models -> (errors, protocols): the layout
    shows the architecture, and a module can be read knowing only the layers below it."""
    assert layer_problems(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


def test_the_layering_check_catches_each_wrong_way_import(tmp_path):
    """The check can fail: a private reach (also a lazy one, also ``from benchmark import _x``,
    also from perf/ or tests/harness), benchmark importing harness and the agent importing
    benchmark are each reported; an import under TYPE_CHECKING, a public one and
    tests/benchmark's unit tests of benchmark's internals are not."""
    root = _tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/a.py": "from benchmark._docker import connect\n",
        "harness/b.py": "def f():\n    from benchmark import _process\n",
        "harness/ok.py": ("from typing import TYPE_CHECKING\nfrom benchmark import TaskSpec\n"
                          "import benchmark.forge.lm\nif TYPE_CHECKING:\n    from benchmark._task import X\n"),
        "benchmark/__init__.py": "from benchmark._docker import connect\n",
        "benchmark/_docker.py": "from harness.a import x\n",
        "agent_seed/agent.py": "import benchmark\n",
        "perf/overhead.py": "import benchmark._docker as d\nfrom benchmark import docker_host\n",
        "tests/harness/test_x.py": "from benchmark._agent_env import AgentRun\n",
        "tests/benchmark/test_docker.py": "from benchmark import _docker\n",
    })
    problems = layering_problems(root)
    assert [p.split(":")[0] for p in problems] == [
        "harness/a.py imports benchmark._docker.connect",
        "harness/b.py imports benchmark._process",
        "benchmark/_docker.py imports harness.a.x",
        "agent_seed/agent.py imports benchmark",
        "perf/overhead.py imports benchmark._docker",
        "tests/harness/test_x.py imports benchmark._agent_env.AgentRun",
    ]


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path):
    """A cycle closed by an import inside a function is found; a one-way chain is not."""
    root = _tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/cli.py": "from harness import loop\n",
        "harness/loop.py": "import harness.journal\n",
        "harness/journal.py": "def f():\n    from harness.cli import app\n",
    })
    assert import_cycles(import_graph(root)) == [
        ["harness.cli", "harness.loop", "harness.journal", "harness.cli"]]
    (root / "harness/journal.py").write_text("import json\n")
    assert import_cycles(import_graph(root)) == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """A model module reaching up into the loop is reported; the loop using models is not."""
    root = _tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/loop/__init__.py": "",
        "harness/loop/journal.py": "from harness.models import gateway\n",
        "harness/models/__init__.py": "",
        "harness/models/gateway.py": "from harness.errors import HarnessError\n",
        "harness/errors.py": "",
    })
    assert layer_problems(root) == []
    (root / "harness/models/gateway.py").write_text("def f():\n    from harness.loop.journal import x\n")
    assert layer_problems(root) == [
        "harness.models.gateway (5) imports harness.loop.journal (2), a layer above it"]
