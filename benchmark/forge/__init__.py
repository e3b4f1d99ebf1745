"""The task forge: validated tasks made by injecting bugs into real PyPI packages.

See ``docs/forge.md``. ``mutations`` holds the AST operators (pure functions of source
text), ``statements`` the problem statements (pure functions of a pytest log), ``forge``
the pipeline that runs sandboxes and validates; ``lm`` the model-rewrite strategy (tested with a
scripted server and a stand-in model only).
"""

from benchmark.forge.forge import (
    PYTEST_DEPS,
    RECIPES,
    Forge,
    ForgeReport,
    PackageRecipe,
    merge_tasks,
    split_of,
    stable_passes,
)
from benchmark.forge.finder import find_mutations
from benchmark.forge.mutations import (
    KINDS,
    Mutation,
    apply_mutation,
    is_library_file,
)
from benchmark.forge.statements import check_statement, failure_messages, write_statement

__all__ = [
    "KINDS",
    "PYTEST_DEPS",
    "RECIPES",
    "Forge",
    "ForgeReport",
    "Mutation",
    "PackageRecipe",
    "apply_mutation",
    "check_statement",
    "failure_messages",
    "find_mutations",
    "is_library_file",
    "merge_tasks",
    "split_of",
    "stable_passes",
    "write_statement",
]
