"""Program ids for code diversity (docs/code.md#diversity): equal iff the normalised programs are equal.

A program is normalised by parsing it with `ast` and dumping the tree without positions, with
docstrings removed and the local variables (parameters included) of every function, lambda and
comprehension renamed to canonical names in order of first use, following Python's scoping
(a comprehension's first iterable is read in the enclosing scope; `global` and `nonlocal` are
honoured; a class body is not visible to its methods). So two programs that differ only in
layout, comments, docstrings or the names of their local variables get the same id; programs
that differ in anything else (an operator, a loop for a comprehension) do not.

Renaming is conservative. Module-level names (the entry point, imports, a script's globals),
class attributes and any parameter that a call in the program names by keyword keep their
spelling; a function that defines a class keeps its locals; a program that can reach its locals
by name (`locals`, `vars`, `eval`, `exec`, frames, ...) or binds a name with `:=` inside a
comprehension is not renamed at all. The canonical names hold a space, which no identifier can,
so a renamed name never equals a real one. A program that does not parse (or is over
MAX_PROGRAM_CHARS) is compared by its exact text.

Pure Python: the ids feed the metrics as `text_id` does (`bstar.metrics.distinct_count`).
"""
from __future__ import annotations

import ast
import dataclasses
import warnings
from typing import Iterable, Sequence

import numpy as np

from bstar_jax.data.code_format import extract_program

MAX_PROGRAM_CHARS = 20_000  # a sampled program is a few kB; bounds the time per program
# Names through which a program can reach its local variables by their spelling.
_INTROSPECTION = frozenset(("locals", "vars", "eval", "exec", "globals", "dir", "compile", "breakpoint",
                            "f_locals", "_getframe", "currentframe", "__code__", "signature", "getfullargspec"))
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef) + _FUNCTIONS) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]


def _body(scope: ast.AST) -> list[ast.AST]:
    """The direct children of a scope evaluated in the scope itself (a comprehension's first
    iterable is evaluated in the enclosing scope, the rest of it in its own)."""
    if isinstance(scope, _COMPREHENSIONS):
        first, *rest = scope.generators
        return [first.target, *first.ifs, *rest] + (
            [scope.key, scope.value] if isinstance(scope, ast.DictComp) else [scope.elt])
    if isinstance(scope, ast.Lambda):
        return [scope.body]
    return list(scope.body)


def _outer_parts(scope: ast.AST) -> list[ast.AST]:
    """The parts of a scope evaluated in the enclosing one: decorators, defaults, annotations,
    class bases, a comprehension's first iterable."""
    if isinstance(scope, _COMPREHENSIONS):
        return [scope.generators[0].iter]
    if isinstance(scope, ast.Lambda):
        return [*scope.args.defaults, *(d for d in scope.args.kw_defaults if d is not None)]
    parts = list(scope.decorator_list)
    if isinstance(scope, ast.ClassDef):
        return parts + list(scope.bases) + [k.value for k in scope.keywords]
    a = scope.args
    return parts + [*a.defaults, *(d for d in a.kw_defaults if d is not None),
                    *(p.annotation for p in _params(scope) if p.annotation is not None),
                    *([scope.returns] if scope.returns is not None else [])]


def _params(scope: ast.AST) -> list[ast.arg]:
    a = scope.args
    return [p for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p is not None]


def _own_nodes(scope: ast.AST) -> Iterable[ast.AST]:
    """Every node evaluated in `scope` itself (nested scopes contribute their outer parts)."""
    stack = _body(scope)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_outer_parts(node) if isinstance(node, _SCOPES) else ast.iter_child_nodes(node))


def _binding_names(node: ast.AST) -> list[str]:
    """Names a node binds in the scope it is evaluated in, besides `ast.Name` stores."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names if a.name != "*"]
    if isinstance(node, _FUNCTIONS + (ast.ClassDef,)):
        return [node.name]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        return [node.name]
    if isinstance(node, ast.MatchMapping) and node.rest:
        return [node.rest]
    return []


@dataclasses.dataclass
class _Scope:
    kind: str  # "class" or "function" (functions, lambdas and comprehensions)
    local: set[str]  # every name local to the scope, parameters included
    declared_global: set[str]
    renames: dict[str, str] | None  # renamable name -> canonical ("" until first use); None: keep all


class _Renamer:
    """Renames the local variables of every function-like scope to "local N", N counting first uses."""

    def __init__(self, keywords: set[str]):
        self.count = 0
        self.keywords = keywords  # parameters a call in the program names keep their names

    def scope_of(self, scope: ast.AST) -> _Scope:
        own = list(_own_nodes(scope))
        declared_global = {n for node in own if isinstance(node, ast.Global) for n in node.names}
        nonlocal_ = {n for node in own if isinstance(node, ast.Nonlocal) for n in node.names}
        bound = {node.id for node in own if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
        bound.update(n for node in own for n in _binding_names(node))
        params = {p.arg for p in _params(scope)} if isinstance(scope, _FUNCTIONS + (ast.Lambda,)) else set()
        local = (bound | params) - declared_global - nonlocal_
        if isinstance(scope, ast.ClassDef):
            return _Scope("class", local, declared_global, None)
        # a class body may read this function's locals by their spelling: keep them
        keep = any(isinstance(node, ast.ClassDef) for node in own)
        renamable = local - (params & self.keywords)
        return _Scope("function", local, declared_global, None if keep else {n: "" for n in sorted(renamable)})

    def resolve(self, name: str, chain: list[_Scope]) -> str:
        """The canonical spelling of `name` read or bound in the innermost scope of `chain`:
        looked up outward as Python does (an enclosing class body is not visible)."""
        for depth, scope in enumerate(reversed(chain)):
            if scope.kind == "class" and depth > 0:
                continue
            if name in scope.declared_global:
                return name
            if name in scope.local:
                if scope.renames is None or name not in scope.renames:
                    return name
                if not scope.renames[name]:
                    scope.renames[name] = f"local {self.count}"
                    self.count += 1
                return scope.renames[name]
        return name

    def visit(self, node: ast.AST, chain: list[_Scope]) -> None:
        """Rename in `node` (evaluated in the innermost scope of `chain`) and below."""
        if isinstance(node, _SCOPES):
            for part in _outer_parts(node):
                self.visit(part, chain)
            if isinstance(node, _FUNCTIONS + (ast.ClassDef,)):
                node.name = self.resolve(node.name, chain)
            inner = chain + [self.scope_of(node)]
            if isinstance(node, _FUNCTIONS + (ast.Lambda,)):
                for p in _params(node):
                    p.arg = self.resolve(p.arg, inner)
            for child in _body(node):
                self.visit(child, inner)
            return
        if isinstance(node, ast.Name):
            node.id = self.resolve(node.id, chain)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            node.name = self.resolve(node.name, chain)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            node.rest = self.resolve(node.rest, chain)
        elif isinstance(node, ast.Nonlocal):
            node.names = [self.resolve(n, chain) for n in node.names]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                if a.name != "*" and self.resolve(bound, chain) != bound:
                    a.asname = self.resolve(bound, chain)  # "import a.b" binds "a": marked by the asname
        for child in ast.iter_child_nodes(node):
            self.visit(child, chain)


def _renamable(tree: ast.AST) -> bool:
    """False for a program that can reach its locals by name, or has scoping this renamer does
    not model (an assignment expression in a comprehension, type parameters)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _INTROSPECTION or \
                isinstance(node, ast.Attribute) and node.attr in _INTROSPECTION:
            return False
        if isinstance(node, _COMPREHENSIONS) and any(isinstance(n, ast.NamedExpr) for n in ast.walk(node)):
            return False
        if getattr(node, "type_params", None):
            return False
    return True


def normalize_program(program: str) -> str:
    """The normalised form of a program: "ast:" + the dump of its normalised tree, or "text:" +
    the program itself when it does not parse (or is over MAX_PROGRAM_CHARS characters)."""
    if len(program) > MAX_PROGRAM_CHARS:
        return "text:" + program
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = ast.parse(program)
        _strip_docstrings(tree)
        if _renamable(tree):
            renamer = _Renamer({k.arg for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg})
            for child in tree.body:
                renamer.visit(child, [])
        return "ast:" + ast.dump(tree, annotate_fields=False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "text:" + program


def program_ids(responses_QxK: Sequence[Sequence[str]] | np.ndarray) -> np.ndarray:
    """int32 [Q, K] program ids: equal within a row iff the normalised programs of the two
    responses are equal (`extract_program`, then `normalize_program`). Responses without a
    program are compared by their exact text (with each other, never with a program)."""
    rows = [list(row) for row in np.asarray(responses_QxK, dtype=object)]
    out = np.zeros((len(rows), len(rows[0]) if rows else 0), np.int32)
    for q, row in enumerate(rows):
        seen: dict[str, int] = {}
        for k, response in enumerate(row):
            program = extract_program(response)
            key = normalize_program(program) if program is not None else "none:" + str(response)
            out[q, k] = seen.setdefault(key, len(seen))
    return out


def distinct_programs(program_id_QxK: np.ndarray, mask_QxK: np.ndarray) -> np.ndarray:
    """Number of distinct program ids among the masked entries of each row, int [Q]."""
    ids, mask = np.asarray(program_id_QxK), np.asarray(mask_QxK, bool)
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(f"distinct_programs: ids {ids.shape} and mask {mask.shape} must be the same [Q, K]")
    return np.array([len(set(row[m].tolist())) for row, m in zip(ids, mask)], np.int32)


def code_diversity(responses_QxK, correct_QxK) -> float:
    """Code diversity: the number of distinct normalised programs among the correct responses,
    averaged over the queries with at least one correct response; 0.0 when there are none."""
    correct = np.asarray(correct_QxK, bool)
    counts = distinct_programs(program_ids(responses_QxK), correct)
    some = correct.any(axis=1)
    return float(counts[some].mean()) if some.any() else 0.0
