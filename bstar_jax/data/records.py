"""The `Example` record every loader returns, and validated reading of JSONL / JSON files.

Errors name the file and the line: `data/train.jsonl:17: missing field "question"`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Sequence

from etils import epath

from bstar_jax.core.errors import DataError

TASKS = ("gsm8k", "math", "arc", "code")



# The longest record line accepted (characters). A problem with its solution is a few kB; a line
# of megabytes is a wrong file or a broken export and would fail much later, deep in the sampler.
MAX_LINE_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class CodeTests:
    """A programming problem's tests in the APPS `input_output` form (docs/code.md#tests).

    Standard-input tests (no `fn_name`): each input is the text fed to stdin, each output the
    expected stdout (a string, or a list of lines as some APPS problems give it). Call-based
    tests: `fn_name` is the entry point, each input the list of positional arguments, each
    output the return value. Kept as canonical JSON text, so a `CodeTests` is immutable,
    hashable and compares by value; `as_dict()` gives a fresh dict for the grader.
    """
    input_output: str

    @classmethod
    def make(cls, inputs: Sequence[Any], outputs: Sequence[Any], fn_name: str | None = None) -> "CodeTests":
        """Validated tests; ValueError (naming what is wrong) for a malformed set."""
        inputs, outputs = list(inputs), list(outputs)
        if not inputs:
            raise ValueError("no tests: inputs is empty")
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        if fn_name is not None:
            if not isinstance(fn_name, str) or not fn_name.isidentifier():
                raise ValueError(f"fn_name must be a Python identifier, got {fn_name!r}")
            bad = next((i for i, x in enumerate(inputs) if not isinstance(x, list)), None)
            if bad is not None:
                raise ValueError(f"call-based input {bad} must be a list of arguments, got "
                                 f"{type(inputs[bad]).__name__}")
        else:
            bad = next((i for i, x in enumerate(inputs) if not isinstance(x, str)), None)
            if bad is not None:
                raise ValueError(f"standard-input input {bad} must be a string, got {type(inputs[bad]).__name__}")
            bad = next((i for i, y in enumerate(outputs) if not isinstance(y, str) and not (
                isinstance(y, list) and all(isinstance(line, str) for line in y))), None)
            if bad is not None:
                raise ValueError(f"standard-input output {bad} must be a string or a list of strings, got "
                                 f"{type(outputs[bad]).__name__}")
        body: dict[str, Any] = {"inputs": inputs, "outputs": outputs}
        if fn_name is not None:
            body["fn_name"] = fn_name
        try:
            text = json.dumps(body, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"tests are not plain JSON values ({e})") from None
        return cls(text)

    def as_dict(self) -> dict[str, Any]:
        """{"inputs": [...], "outputs": [...]} plus "fn_name" for call-based tests (a fresh copy)."""
        return json.loads(self.input_output)

    @property
    def fn_name(self) -> str | None:
        """The entry point of call-based tests; None for standard-input tests."""
        return self.as_dict().get("fn_name")

    def __len__(self) -> int:
        return len(self.as_dict()["inputs"])


@dataclasses.dataclass(frozen=True)
class Example:
    """One problem with a reference solution in the step format of docs/algorithm.md#prompt-and-response-format.

    `solution` is steps separated by "\\n\\n" ending "\\n\\n# Answer\\n\\n{answer}" (see
    `format.format_response`); `task` picks the answer checker: "gsm8k", "math", "arc" or
    "code". `meta` holds optional (key, value) string pairs, e.g. (("level", "Level 5"),) for MATH.

    A "code" example carries its `tests`; its answer is the reference program (the text the
    answer block's code fence holds, docs/code.md#prompt-and-solution-format), "" when the
    problem has no reference solution, and then `solution` is "" too.
    """
    id: str
    question: str
    solution: str
    answer: str
    task: str
    meta: tuple[tuple[str, str], ...] = ()
    tests: CodeTests | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Example {self.id}: task {self.task!r} not in {TASKS}")
        if (self.task == "code") != isinstance(self.tests, CodeTests):
            raise ValueError(f"Example {self.id}: a code example needs CodeTests and any other task none, "
                             f"got task {self.task!r} with tests {type(self.tests).__name__}")


def read_records(path: str | os.PathLike, *, max_line_bytes: int = MAX_LINE_BYTES
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) for each object in a JSONL file (or a .json list of objects).

    `location` is "file:line" (JSONL) or "file:item N" (JSON list), for error messages. Blank
    lines are skipped. A missing file, an empty file, a line that is not JSON or not an object,
    or a line over `max_line_bytes` raises `DataError`.
    """
    path = epath.Path(path)  # a local file or a gs:// URL
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the JSONL file inside it")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    n = 0
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith(b"["):  # a JSON list, as the released B-STaR data files are
            raw = f.read()
            try:
                items = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                line = raw[:e.start].count(b"\n") + 1
                raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8") \
                    from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(items, list):
                raise DataError(f"{path}: expected a JSON list of objects")
            for i, obj in enumerate(items):
                yield _check_object(obj, f"{path}:item {i}")
                n += 1
        else:
            for lineno, raw in enumerate(iter(lambda: f.readline(max_line_bytes + 1), b""), start=1):
                where = f"{path}:{lineno}"
                if len(raw) > max_line_bytes:
                    raise DataError(f"{where}: line longer than {max_line_bytes} bytes; no record of this dataset is "
                                    f"that long, so this is not its data file (or a broken export)")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                    f"save the file as UTF-8") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: malformed JSON ({e.msg}, column {e.colno})") from None
                yield _check_object(obj, where)
                n += 1
    if n == 0:
        raise DataError(f"{path}: empty file, no records")


def _check_object(obj: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return where, obj


def field(record: Mapping[str, Any], name: str, where: str, kind: type | tuple = str) -> Any:
    """`record[name]`, checked to exist and to be of type `kind`; else `DataError` at `where`."""
    if name not in record:
        raise DataError(f'{where}: missing field "{name}"')
    value = record[name]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f'{where}: field "{name}" must be {want}, got {type(value).__name__}')
    if isinstance(value, str) and not value.strip():
        raise DataError(f'{where}: field "{name}" is empty')
    return value


def record_id(record: Mapping[str, Any], default: str) -> str:
    """The record's own id ("id" or "unique_id") when it has one, else `default`."""
    for key in ("id", "unique_id"):
        if isinstance(record.get(key), (str, int)) and str(record[key]):
            return str(record[key])
    return default


def take(examples: list[Example], limit: int | None) -> list[Example]:
    """The first `limit` examples (all when None)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return examples if limit is None else examples[:limit]
