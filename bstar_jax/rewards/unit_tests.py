"""APPS unit tests: reading the `input_output` dict and judging a program's output against it.

The judging runs in the grading process, never in the program's: the program's process hands
back only bytes (its stdout, or its return value serialised as JSON), which are decoded here into
plain data, so no object of the program's (an `__eq__` that always says yes, patched builtins)
takes part in the comparison.

Standard-input tests (no `fn_name`): an input or output given as a list of lines is joined with
"\\n" (as APPS's own harness does). Output matches expected when either
  1. line by line they are equal after "\\r\\n" -> "\\n", each line's trailing whitespace
     removed and trailing empty lines dropped; or
  2. split on any whitespace, they have the same number of tokens and each pair is equal, or is
     a pair of finite numbers, at least one written with a decimal point or exponent, within
     |a - b| <= 1e-8 + 1e-5 |b| (APPS's np.allclose check). Integers must match exactly: APPS
     also lets 1000001 pass for 1000000, which would reward wrong answers.
Call-based tests (`fn_name`): each input is the list of positional arguments (any other value
is one argument); the return value, JSON-serialised in the child (tuples become lists, dict
keys strings), equals the expected value under Python `==` on plain data, or equals the sole
element of an expected one-element list (APPS stores many outputs wrapped as `[value]`). A value
JSON cannot encode fails the test.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from bstar_jax.core.errors import UserError

_RTOL, _ATOL = 1e-5, 1e-8


class UnitTestError(UserError):
    """A malformed `input_output` dict: one line naming the field."""


@dataclass(frozen=True)
class UnitTests:
    """One problem's tests, checked: `inputs` as the worker feeds them, `expected` as judged."""
    inputs: list
    expected: list
    fn_name: str | None = None

    def __len__(self):
        return len(self.inputs)


def _text(value, field, i):
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, str):
        return value
    raise UnitTestError(f"input_output.{field}[{i}]: a stdin test needs a string (or a list of lines), "
                        f"got {type(value).__name__}")


def parse_tests(tests) -> UnitTests:
    """Check and normalise an APPS `input_output` dict (`inputs`, `outputs`, optional `fn_name`);
    its JSON text, or a `bstar_jax.data.CodeTests` (which holds that text), are accepted too.
    Raises UnitTestError naming the bad field."""
    if isinstance(tests, UnitTests):
        return tests
    if isinstance(getattr(tests, "input_output", None), str):
        tests = tests.input_output
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError as exc:
            raise UnitTestError(f"input_output: not valid JSON ({exc})") from None
    if not isinstance(tests, dict):
        raise UnitTestError(f"input_output: expected a dict with 'inputs' and 'outputs', got {type(tests).__name__}")
    for key in ("inputs", "outputs"):
        if not isinstance(tests.get(key), list):
            raise UnitTestError(f"input_output.{key}: expected a list, got {type(tests.get(key)).__name__}")
    inputs, outputs = tests["inputs"], tests["outputs"]
    if len(inputs) != len(outputs):
        raise UnitTestError(f"input_output: {len(inputs)} inputs but {len(outputs)} outputs")
    fn_name = tests.get("fn_name")
    if fn_name is None:
        return UnitTests([_text(v, "inputs", i) for i, v in enumerate(inputs)],
                         [_text(v, "outputs", i) for i, v in enumerate(outputs)])
    if not isinstance(fn_name, str) or not fn_name.isidentifier():
        raise UnitTestError(f"input_output.fn_name: expected a Python identifier, got {fn_name!r}")
    try:  # what the child's JSON will look like: tuples as lists, keys as strings
        inputs, outputs = json.loads(json.dumps(inputs)), json.loads(json.dumps(outputs))
    except (TypeError, ValueError) as exc:
        raise UnitTestError(f"input_output: call-based inputs/outputs must be JSON data ({exc})") from None
    return UnitTests(inputs, outputs, fn_name)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _is_integer(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def _close(got: str, want: str) -> bool:
    if _is_integer(got) and _is_integer(want):
        return False  # unequal integer strings: no tolerance
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= _ATOL + _RTOL * abs(b)


def stdout_matches(got: str, expected: str) -> bool:
    """Whether a program's standard output passes a stdin test (rules in the module docstring)."""
    if _lines(got) == _lines(expected):
        return True
    got_tokens, want_tokens = got.split(), expected.split()
    return len(got_tokens) == len(want_tokens) and all(
        g == w or _close(g, w) for g, w in zip(got_tokens, want_tokens))


def return_matches(payload: bytes, expected) -> bool:
    """Whether a call-based test's serialised return value (JSON bytes) equals `expected`."""
    try:
        got = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if _plain_equal(got, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _plain_equal(got, expected[0])


def _plain_equal(a, b) -> bool:
    try:
        return bool(a == b)
    except RecursionError:
        return False
