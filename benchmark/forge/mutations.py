"""Procedural bug injection: AST mutation operators that edit only the mutated node's text.

``ast`` finds the sites; the edit replaces only the source segment of the mutated node (or
of the operator token between two operands), located by the node's line/column offsets, so
the rest of the file keeps its formatting and the diff is one or two lines.

Kinds (one mutation per site; a site is (file, line, column, kind)):

- ``flip_compare``   ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``is`` ↔ ``is not``, ``in`` ↔ ``not in``
- ``off_by_one``     an integer bound in a slice, an index or a ``range()`` argument: n → n±1
- ``invert_if``      ``if x`` → ``if not x`` (and ``if not x`` → ``if x``), also ``while`` and ``x if c else y``
- ``drop_stmt``      drop a call statement, an augmented assignment, a ``raise`` or an early
                     ``return``/``continue``/``break`` (a block left empty gets ``pass``)
- ``swap_args``      swap the first two positional arguments of a call, or drop its last keyword
- ``change_op``      ``+`` ↔ ``-``, ``*`` ↔ ``//``, ``and`` ↔ ``or``, ``True`` ↔ ``False``

Only code inside functions of library files is mutated (`is_library_file`): never tests,
never module-level code (an import-time error is a broken package, not a bug to find).
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["KINDS", "STRUCTURE_KINDS", "TOKEN_KINDS", "Mutation", "apply_mutation",
           "is_library_file"]

TOKEN_KINDS = ("flip_compare", "off_by_one", "invert_if", "drop_stmt", "swap_args", "change_op")
# structural kinds and combined bugs live in `structural`; the names are listed here so that
# every kind is one import away (kept in step by a test)
STRUCTURE_KINDS = ("remove_cond", "remove_loop", "remove_assign", "swap_operands",
                   "change_const", "shuffle_stmts", "remove_method", "remove_base")
KINDS = TOKEN_KINDS + STRUCTURE_KINDS + ("combined",)

_NON_LIBRARY_DIRS = {"tests", "test", "testing", "docs", "doc", "examples", "example",
                     "benchmarks", "benchmark", "scripts", "tools", "build", "dist", ".github"}
_NON_LIBRARY_FILES = {"setup.py", "conftest.py", "noxfile.py", "tasks.py", "fabfile.py",
                      "_version.py", "__main__.py", "__about__.py"}


def is_library_file(path: str) -> bool:
    """A Python file of the package itself: not a test, not build or doc tooling."""
    p = PurePosixPath(path)
    if p.suffix != ".py" or p.name in _NON_LIBRARY_FILES:
        return False
    if p.name.startswith("test_") or p.stem.endswith("_test") or p.stem == "tests":
        return False
    return not any(part.lower() in _NON_LIBRARY_DIRS for part in p.parts[:-1])


@dataclass(frozen=True)
class Mutation:
    """One edit of one file: replace ``source[start:end]`` with ``replacement``."""

    path: str
    kind: str
    line: int
    col: int
    function: str
    start: int
    end: int
    original: str
    replacement: str
    parts: tuple[str, ...] = ()
    """The kinds a ``combined`` mutation is made of (empty for one-site kinds)."""

    @property
    def site(self) -> tuple[str, int, int]:
        return (self.path, self.line, self.col)

    @property
    def key(self) -> str:
        """Stable short id: the same edit at the same place gives the same key."""
        raw = f"{self.path}:{self.line}:{self.col}:{self.kind}:{self.replacement}"
        return hashlib.sha256(raw.encode()).hexdigest()[:8]

    def describe(self) -> str:
        return (f"{self.kind} in {self.function}() at {self.path}:{self.line}: "
                f"{self.original.strip()!r} -> {self.replacement.strip()!r}")


def apply_mutation(source: str, mutation: Mutation) -> str:
    return source[:mutation.start] + mutation.replacement + source[mutation.end:]


class _Offsets:
    """(line, UTF-8 byte column) as ast reports them → character offset into the source."""

    def __init__(self, source: str):
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, line: int, col: int) -> int:
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        return self.starts[line - 1] + len(text.encode("utf-8")[:col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset))


_COMPARE_FLIPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="),
                  ast.GtE: (">=", ">"), ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
_WORD_FLIPS = {ast.Is: (r"\bis\b", "is not"), ast.IsNot: (r"\bis\s+not\b", "is"),
               ast.In: (r"\bin\b", "not in"), ast.NotIn: (r"\bnot\s+in\b", "in")}
_BINOP_FLIPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "//"),
                ast.FloorDiv: ("//", "*")}


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, source: str):
        self.path = path
        self.source = source
        self.off = _Offsets(source)
        self.found: list[Mutation] = []
        self.function: list[str] = []
        self.index_ctx = 0  # >0 while inside a slice, an index or range() arguments
        self.taken: set[tuple[int, int]] = set()  # one mutation per site

    # helpers --------------------------------------------------------------------------

    def _add(self, kind: str, node: ast.AST, start: int, end: int, replacement: str) -> None:
        site = (node.lineno, node.col_offset, kind)
        if not self.function or site in self.taken:
            return
        original = self.source[start:end]
        if original == replacement:
            return
        self.taken.add(site)
        self.found.append(Mutation(self.path, kind, node.lineno, node.col_offset,
                                   self.function[-1], start, end, original, replacement))

    def _gap(self, left: ast.AST, right: ast.AST) -> tuple[int, int]:
        return (self.off.at(left.end_lineno, left.end_col_offset),
                self.off.at(right.lineno, right.col_offset))

    def _seg(self, node: ast.AST) -> str:
        start, end = self.off.span(node)
        return self.source[start:end]

    # scopes ---------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function.append(node.name)
        body = node.body[1:] if node.body and _is_docstring(node.body[0], node) else node.body
        for index, stmt in enumerate(body):
            self._maybe_drop(stmt, body, index, in_function_body=True)
            self.visit(stmt)
        self.function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        saved, self.function = self.function, []  # class bodies run at import time
        for stmt in node.body:
            self.visit(stmt)
        self.function = saved

    def _block(self, body: list[ast.stmt]) -> None:
        for index, stmt in enumerate(body):
            self._maybe_drop(stmt, body, index, in_function_body=False)

    def generic_visit(self, node: ast.AST) -> None:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt) \
                    and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                self._block(block)
        super().generic_visit(node)

    # drop_stmt ------------------------------------------------------------------------

    def _maybe_drop(self, stmt: ast.stmt, body: list[ast.stmt], index: int, *,
                    in_function_body: bool) -> None:
        droppable = (
            (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call))
            or isinstance(stmt, (ast.AugAssign, ast.Raise, ast.Continue, ast.Break))
            # an early return: one that is not the function's last statement
            or (isinstance(stmt, ast.Return) and not (in_function_body and index == len(body) - 1))
        )
        if not droppable or not self.function:
            return
        lines = self.off.lines
        first, last = lines[stmt.lineno - 1], lines[stmt.end_lineno - 1]
        head = first.encode()[:stmt.col_offset].decode("utf-8", "replace")
        tail = last.encode()[stmt.end_col_offset:].decode("utf-8", "replace")
        if head.strip() or (tail.strip() and not tail.strip().startswith("#")):
            return  # shares its line with other code (`a; b` or `if x: return`)
        start = self.off.starts[stmt.lineno - 1]
        end = self.off.starts[stmt.end_lineno]
        replacement = f"{head}pass\n" if len(body) == 1 else ""
        if isinstance(stmt, ast.Return) and len(body) == 1 and in_function_body:
            return
        self._add("drop_stmt", stmt, start, end, replacement)

    # expression sites -----------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> None:
        if len(node.ops) == 1:
            op = type(node.ops[0])
            start, end = self._gap(node.left, node.comparators[0])
            gap = self.source[start:end]
            new_gap = None
            if op in _COMPARE_FLIPS:
                old, new = _COMPARE_FLIPS[op]
                if gap.count(old) == 1 and "#" not in gap:
                    new_gap = gap.replace(old, new)
            elif op in _WORD_FLIPS:
                pattern, new = _WORD_FLIPS[op]
                if "#" not in gap and len(re.findall(pattern, gap)) == 1:
                    new_gap = re.sub(pattern, new, gap)
            if new_gap is not None:
                self._add("flip_compare", node, start, end, new_gap)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        op = type(node.op)
        if op in _BINOP_FLIPS and not self.index_ctx:
            start, end = self._gap(node.left, node.right)
            gap = self.source[start:end]
            old, new = _BINOP_FLIPS[op]
            is_string = any(isinstance(side, ast.Constant) and isinstance(side.value, (str, bytes))
                            for side in (node.left, node.right))
            if not is_string and gap.count(old) == 1 and "#" not in gap \
                    and not (old == "*" and "**" in gap) and not (old == "-" and "->" in gap):
                self._add("change_op", node, start, end, gap.replace(old, new))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        start = self.off.at(node.values[0].end_lineno, node.values[0].end_col_offset)
        end = self.off.at(node.values[-1].lineno, node.values[-1].col_offset)
        gaps = [self._gap(a, b) for a, b in zip(node.values, node.values[1:])]
        if all(len(re.findall(rf"\b{old}\b", self.source[s:e])) == 1
               and "#" not in self.source[s:e] for s, e in gaps):
            # replace the operator in every gap between operands, nothing inside them
            pieces, cursor = [], start
            for s, e in gaps:
                pieces.append(self.source[cursor:s])
                pieces.append(re.sub(rf"\b{old}\b", new, self.source[s:e]))
                cursor = e
            pieces.append(self.source[cursor:end])
            self._add("change_op", node, start, end, "".join(pieces))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value is True or node.value is False:
            start, end = self.off.span(node)
            self._add("change_op", node, start, end, "False" if node.value else "True")
        elif self.index_ctx and type(node.value) is int:
            start, end = self.off.span(node)
            text = self.source[start:end]
            if text.isdigit():
                value = int(text)
                self._add("off_by_one", node, start, end, str(value + 1 if value == 0 else value - 1))

    def _visit_index(self, node: ast.AST | None, delta: str = "+ 1") -> None:
        if node is None:
            return
        self.index_ctx += 1
        if isinstance(node, (ast.Name, ast.Attribute, ast.Call)) and self.function:
            start, end = self.off.span(node)
            if "\n" not in self.source[start:end]:
                self._add("off_by_one", node, start, end, f"{self.source[start:end]} {delta}")
        self.visit(node)
        self.index_ctx -= 1

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)
        target = node.slice
        if isinstance(target, ast.Slice):
            self._visit_index(target.lower, "+ 1")
            self._visit_index(target.upper, "- 1")
            if target.step is not None:
                self.visit(target.step)
        elif isinstance(target, ast.Constant) and type(target.value) is int:
            self._visit_index(target)
        elif isinstance(target, ast.UnaryOp) and isinstance(target.op, ast.USub):
            self._visit_index(target.operand)
        elif isinstance(target, ast.BinOp):
            self._visit_index(target)
        else:
            self.visit(target)

    def visit_Call(self, node: ast.Call) -> None:
        self.visit(node.func)
        is_range = isinstance(node.func, ast.Name) and node.func.id == "range"
        plain = [a for a in node.args if not isinstance(a, ast.Starred)]
        if not is_range and len(node.args) >= 2 and len(plain) == len(node.args):
            a, b = node.args[0], node.args[1]
            sa, sb = self._seg(a), self._seg(b)
            start, end = self.off.span(a)[0], self.off.span(b)[1]
            if sa != sb and "\n" not in self.source[start:end]:
                between = self.source[self.off.span(a)[1]:self.off.span(b)[0]]
                self._add("swap_args", node, start, end, sb + between + sa)
        elif not is_range and node.keywords and all(k.arg for k in node.keywords) \
                and (node.args or len(node.keywords) >= 1):
            last = node.keywords[-1]
            prev = node.keywords[-2] if len(node.keywords) > 1 else (node.args[-1] if node.args else None)
            k_end = self.off.span(last)[1]
            if prev is not None:
                start = self.off.span(prev)[1]
                if "\n" not in self.source[start:k_end]:
                    self._add("swap_args", node, start, k_end, "")
        for position, arg in enumerate(node.args):
            if is_range:
                stop = position == (0 if len(node.args) == 1 else 1)
                self._visit_index(arg, "- 1" if stop else "+ 1")
            else:
                self.visit(arg)
        for keyword in node.keywords:
            self.visit(keyword.value)

    def visit_If(self, node: ast.If) -> None:
        self._invert(node.test, node)
        self.generic_visit(node)

    visit_While = visit_If

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._invert(node.test, node)
        self.generic_visit(node)

    def _invert(self, test: ast.expr, node: ast.AST) -> None:
        start, end = self.off.span(test)
        text = self.source[start:end]
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            replacement = self._seg(test.operand)
            if isinstance(test.operand, (ast.BoolOp, ast.Compare, ast.IfExp, ast.Lambda, ast.NamedExpr)):
                replacement = f"({replacement})"
        elif isinstance(test, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)):
            replacement = f"not {text}"
        else:
            replacement = f"not ({text})"
        if "\n" in text:
            return
        # the site is the statement, so a comparison inside the test stays mutable too
        site = (node.lineno, node.col_offset, "invert_if")
        if not self.function or site in self.taken:
            return
        self.taken.add(site)
        self.found.append(Mutation(self.path, "invert_if", test.lineno, test.col_offset,
                                   self.function[-1], start, end, text, replacement))


class CompileCheck:
    """Does a mutated file still compile? Checked on the one module-level statement that
    holds the edit (a top-level statement starts at column 0, so its text compiles alone),
    not the whole file: a big module has hundreds of sites."""

    def __init__(self, path: str, source: str, tree: ast.Module):
        self.path, self.source = path, source
        off = _Offsets(source)
        self.spans = [(off.starts[min([d.lineno for d in getattr(n, "decorator_list", [])] + [n.lineno]) - 1],
                       off.starts[n.end_lineno]) for n in tree.body]

    def __call__(self, mutation: Mutation) -> bool:
        start, end = 0, len(self.source)
        for span_start, span_end in self.spans:
            if span_start <= mutation.start and mutation.end <= span_end:
                start, end = span_start, span_end
                break
        text = self.source[start:mutation.start] + mutation.replacement + self.source[mutation.end:end]
        try:
            compile(text, self.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return False
        return True
