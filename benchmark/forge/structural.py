"""Structural bug kinds (SWE-smith's procedural modifiers, written for this forge) and
combined bugs.

Like the token kinds of `mutations`, each edit is located by ``ast`` and replaces only the
text it changes, so the rest of the file keeps its bytes. Whole-statement edits work on
whole lines: a statement is removed or moved only when it has its lines to itself.

- ``remove_cond``    remove an ``if`` statement that has no ``else``/``elif``
- ``remove_loop``    remove a ``for`` or ``while`` loop (with no ``else``)
- ``remove_assign``  remove an assignment statement
- ``swap_operands``  ``a - b`` → ``b - a``, ``a < b`` → ``b < a`` (non-commutative operators only)
- ``change_const``   a number literal in code: n → n ± 1 (index bounds are ``off_by_one``'s)
- ``shuffle_stmts``  two adjacent statements of a block change places
- ``remove_method``  a method of a class disappears (the class may inherit one instead)
- ``remove_base``    a class loses one of its base classes
- ``combined``       2 or 3 of the above or of the token kinds, in different functions of one
                     module (`combined_mutations`): a bug with several sites to find

A block left empty gets ``pass``. Code at module level is never edited (it runs at import
time); class-level edits are the exception, since a class statement with a method or base
less still imports.
"""

from __future__ import annotations

import ast
import hashlib
import random
from collections.abc import Iterator

from benchmark.forge.mutations import (
    STRUCTURE_KINDS,
    CompileCheck,
    Mutation,
    _Offsets,
    apply_mutation,
)

__all__ = ["COMBINED", "STRUCTURE_KINDS", "combined_mutations", "find_structural"]

COMBINED = "combined"
_SWAPPABLE_BINOPS = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)
_SWAPPABLE_COMPARES = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


class _Structural:
    """Finds the structural sites of one file."""

    def __init__(self, path: str, source: str):
        self.path, self.source = path, source
        self.off = _Offsets(source)
        self.found: list[Mutation] = []

    # line helpers -----------------------------------------------------------------------

    def _first_line(self, node: ast.stmt) -> int:
        decorators = getattr(node, "decorator_list", [])
        return min([d.lineno for d in decorators] + [node.lineno])

    def _owns_lines(self, node: ast.stmt) -> bool:
        """The statement starts its first line and ends its last (no ``a; b``)."""
        first = self.off.lines[self._first_line(node) - 1]
        last = self.off.lines[node.end_lineno - 1]
        head_col = node.col_offset if not getattr(node, "decorator_list", None) else \
            node.decorator_list[0].col_offset - 1
        head = first.encode()[:max(head_col, 0)].decode("utf-8", "replace")
        tail = last.encode()[node.end_col_offset:].decode("utf-8", "replace").strip()
        return not head.strip() and (not tail or tail.startswith("#"))

    def _lines_span(self, node: ast.stmt) -> tuple[int, int]:
        return self.off.starts[self._first_line(node) - 1], self.off.starts[node.end_lineno]

    def _indent(self, node: ast.stmt) -> str:
        line = self.off.lines[self._first_line(node) - 1]
        return line[:len(line) - len(line.lstrip())]

    def _add(self, kind: str, node: ast.AST, function: str, start: int, end: int,
             replacement: str) -> None:
        original = self.source[start:end]
        if original != replacement:
            self.found.append(Mutation(self.path, kind, node.lineno, node.col_offset, function,
                                       start, end, original, replacement))

    def _remove(self, kind: str, stmt: ast.stmt, block: list[ast.stmt], function: str) -> None:
        if not self._owns_lines(stmt):
            return
        start, end = self._lines_span(stmt)
        alone = len([s for s in block if not _is_docstring(s)]) == 1
        self._add(kind, stmt, function, start, end, f"{self._indent(stmt)}pass\n" if alone else "")

    # walking ----------------------------------------------------------------------------

    def run(self, tree: ast.Module) -> list[Mutation]:
        for node in tree.body:
            self._top(node)
        return self.found

    def _top(self, node: ast.stmt, in_class: str | None = None) -> None:
        if isinstance(node, ast.ClassDef):
            self._class(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{in_class}.{node.name}" if in_class else node.name
            self._blocks(node, name)

    def _class(self, node: ast.ClassDef) -> None:
        methods = [s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for method in methods:
            self._remove("remove_method", method, node.body, node.name)
        plain_bases = [b for b in node.bases if not isinstance(b, ast.Starred)]
        if plain_bases and len(plain_bases) == len(node.bases) and not node.keywords \
                and node.bases[0].lineno == node.bases[-1].end_lineno == node.lineno:
            for index, base in enumerate(plain_bases):
                start, end = self.off.span(base)
                if len(plain_bases) == 1:
                    # `class A(B):` → `class A:`: drop the parentheses too
                    open_paren = self.source.rfind("(", 0, start)
                    close_paren = self.source.find(")", end)
                    if self.source[open_paren + 1:start].strip() or self.source[end:close_paren].strip():
                        continue
                    self._add("remove_base", base, node.name, open_paren, close_paren + 1, "")
                elif index < len(plain_bases) - 1:
                    next_start = self.off.span(plain_bases[index + 1])[0]
                    self._add("remove_base", base, node.name, start, next_start, "")
                else:
                    prev_end = self.off.span(plain_bases[index - 1])[1]
                    self._add("remove_base", base, node.name, prev_end, end, "")
        for stmt in node.body:
            self._top(stmt, node.name)

    def _blocks(self, function: ast.AST, name: str) -> None:
        """Every statement block inside a function, and the expressions in it."""
        self.bounds = set()  # constants in an index or range(): off_by_one's, not ours
        for node in ast.walk(function):
            inner = [node.slice] if isinstance(node, ast.Subscript) else node.args if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "range") else []
            self.bounds.update(id(c) for part in inner for c in ast.walk(part)
                               if isinstance(c, ast.Constant))
        for node in ast.walk(function):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not function:
                continue
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    self._block(block, name, is_function_body=node is function and field == "body")
            self._expression(node, name)

    def _block(self, block: list[ast.stmt], name: str, *, is_function_body: bool) -> None:
        for stmt in block:
            if isinstance(stmt, ast.If) and not stmt.orelse:
                self._remove("remove_cond", stmt, block, name)
            elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)) and not stmt.orelse:
                self._remove("remove_loop", stmt, block, name)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and getattr(stmt, "value", None) is not None:
                self._remove("remove_assign", stmt, block, name)
        movable = [s for s in block if not _is_docstring(s) and self._owns_lines(s)
                   and not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        pairs = [(a, b) for a, b in zip(block, block[1:])
                 if a in movable and b in movable and a.end_lineno + 1 == self._first_line(b)
                 and not isinstance(b, ast.Return) and not (is_function_body and isinstance(a, ast.Return))]
        if pairs:
            # one shuffle per block, at a place fixed by the block's position in the file
            pick = int(hashlib.sha256(f"{self.path}:{block[0].lineno}".encode()).hexdigest(), 16)
            a, b = pairs[pick % len(pairs)]
            start, _ = self._lines_span(a)
            _, end = self._lines_span(b)
            first = self.source[start:self._lines_span(a)[1]]
            second = self.source[self._lines_span(b)[0]:end]
            self._add("shuffle_stmts", a, name, start, end, second + first)

    def _expression(self, node: ast.AST, name: str) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, _SWAPPABLE_BINOPS):
            self._swap(node, node.left, node.right, name)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 \
                and isinstance(node.ops[0], _SWAPPABLE_COMPARES):
            self._swap(node, node.left, node.comparators[0], name)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) \
                and node.lineno == node.end_lineno and id(node) not in self.bounds:
            start, end = self.off.span(node)
            text = self.source[start:end]
            if text.replace(".", "", 1).isdigit():
                value = node.value
                new = value + 1 if value in (0, 0.0) or int(hashlib.sha256(
                    f"{self.path}:{node.lineno}:{node.col_offset}".encode()).hexdigest(), 16) % 2 else value - 1
                self._add("change_const", node, name, start, end, repr(new))

    def _swap(self, node: ast.AST, left: ast.AST, right: ast.AST, name: str) -> None:
        start, end = self.off.span(node)
        left_start, left_end = self.off.span(left)
        right_start, right_end = self.off.span(right)
        gap = self.source[left_end:right_start]
        # operands exactly at the node's ends (no parentheses around them), one line
        if (start, end) != (left_start, right_end) or "\n" in self.source[start:end] \
                or "(" in gap or ")" in gap or "#" in gap:
            return
        left_text, right_text = self.source[left_start:left_end], self.source[right_start:right_end]
        if left_text == right_text:
            return
        self._add("swap_operands", node, name, start, end, right_text + gap + left_text)


def find_structural(path: str, source: str, tree: ast.Module | None = None,
                    compiles: CompileCheck | None = None) -> list[Mutation]:
    """Every structural mutation of `source` that still compiles, in file order."""
    if tree is None:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return []
    compiles = compiles or CompileCheck(path, source, tree)
    return [m for m in _Structural(path, source).run(tree) if compiles(m)]


def _spans_overlap(a: Mutation, b: Mutation) -> bool:
    return a.start < b.end and b.start < a.end


def combine(path: str, source: str, parts: list[Mutation]) -> Mutation | None:
    """One mutation applying all `parts` (non-overlapping edits of one file), or None when
    they overlap or the result does not compile."""
    parts = sorted(parts, key=lambda m: m.start)
    if any(_spans_overlap(a, b) for a, b in zip(parts, parts[1:])):
        return None
    start, end = parts[0].start, parts[-1].end
    pieces, cursor = [], start
    for part in parts:
        pieces += [source[cursor:part.start], part.replacement]
        cursor = part.end
    pieces.append(source[cursor:end])
    mutation = Mutation(path, COMBINED, parts[0].line, parts[0].col,
                        ",".join(dict.fromkeys(p.function for p in parts)), start, end,
                        source[start:end], "".join(pieces), parts=tuple(p.kind for p in parts))
    try:
        compile(apply_mutation(source, mutation), path, "exec")
    except (SyntaxError, ValueError):
        return None
    return mutation


def combined_mutations(path: str, source: str, singles: list[Mutation], *, seed: str,
                       limit: int = 4) -> Iterator[Mutation]:
    """Up to `limit` bugs of 2 or 3 sites each, in distinct functions of this one module."""
    by_function: dict[str, list[Mutation]] = {}
    for mutation in singles:
        if mutation.kind != COMBINED:
            by_function.setdefault(mutation.function, []).append(mutation)
    if len(by_function) < 2:
        return
    rng = random.Random(f"{seed}:{path}:combined")
    functions = sorted(by_function)
    made = 0
    for _ in range(limit * 4):
        if made >= limit:
            break
        chosen = rng.sample(functions, min(len(functions), rng.choice((2, 3))))
        parts = [rng.choice(by_function[f]) for f in chosen]
        mutation = combine(path, source, parts)
        if mutation is not None:
            made += 1
            yield mutation
