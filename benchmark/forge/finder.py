"""Every mutation of one file: the token kinds (`mutations`) and the structural kinds
(`structural`, which builds on `mutations`), each kept only when the file still compiles.
Apart from both, so neither imports the other back."""

from __future__ import annotations

import ast

from benchmark.forge.mutations import CompileCheck, Mutation, _Finder
from benchmark.forge.structural import find_structural

__all__ = ["find_mutations"]


def find_mutations(path: str, source: str, *, structural: bool = True) -> list[Mutation]:
    """Every mutation of `source` (the file at `path`) that still compiles, in file order:
    the token kinds here and (unless `structural` is false) the structural kinds."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    finder = _Finder(path, source)
    finder.visit(tree)
    compiles = CompileCheck(path, source, tree)
    good = [m for m in sorted(finder.found, key=lambda m: (m.start, m.kind)) if compiles(m)]
    if structural:
        good += find_structural(path, source, tree, compiles)
    return sorted(good, key=lambda m: (m.start, m.kind))
