"""APPS-format programming problems from JSONL (docs/code.md#apps).

One record per line with the APPS dataset's fields: `question` (the statement), `input_output`
(the tests: a JSON string or an object with "inputs", "outputs" and, for call-based problems,
"fn_name"), `solutions` (optional: a JSON string or list of reference programs), `starter_code`
(optional), `problem_id` or `id`, `difficulty` (optional). The question becomes
`code_format.code_question(question, starter_code, fn_name)` and the first reference program
that fits the answer fence becomes the solution. A problem whose `input_output` is empty (APPS
has a few) has nothing to grade against: it is skipped and counted, not an error.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from absl import logging

from bstar_jax.data.code_format import code_question, extract_program, format_code_response
from bstar_jax.data.records import CodeTests, DataError, Example, field, read_records, take

# An APPS test-split line with all its tests runs to tens of MB; beyond this a file is not APPS.
APPS_MAX_LINE_BYTES = 1 << 30


def _json_field(record: dict, name: str, where: str, kinds: tuple) -> Any:
    """`record[name]`, decoded when it is a JSON string; None when absent or empty."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f'{where}: field "{name}" is not valid JSON ({e.msg}, column {e.colno})') from None
    if not isinstance(value, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise DataError(f'{where}: field "{name}" must be {want} (or a JSON string of one), got {type(value).__name__}')
    return value


def apps_tests(record: dict, where: str) -> tuple[CodeTests, str | None] | None:
    """(the record's `input_output` as `CodeTests`, its entry point or None); None when it is
    empty (no tests)."""
    io = _json_field(record, "input_output", where, (dict,))
    if io is None or not io.get("inputs"):
        return None
    for key in ("inputs", "outputs"):
        if not isinstance(io.get(key), list):
            raise DataError(f'{where}: field "input_output" needs a list "{key}", got {type(io.get(key)).__name__}')
    fn_name = io.get("fn_name") or None
    try:
        return CodeTests.make(io["inputs"], io["outputs"], fn_name), fn_name
    except ValueError as e:
        raise DataError(f'{where}: field "input_output": {e}') from None


def apps_example(record: dict, where: str, default_id: str, tests: CodeTests, fn_name: str | None) -> Example:
    """One code `Example` from an APPS record whose tests are `tests` (with entry point `fn_name`)."""
    question = field(record, "question", where)
    starter = record.get("starter_code") or ""
    if not isinstance(starter, str):
        raise DataError(f'{where}: field "starter_code" must be str, got {type(starter).__name__}')
    solutions = _json_field(record, "solutions", where, (list,)) or []
    if not all(isinstance(s, str) for s in solutions):
        raise DataError(f'{where}: field "solutions" must be a list of program strings')
    solution = ""
    for program in solutions:
        try:
            solution = format_code_response(program.replace("\r\n", "\n"))
            break
        except ValueError:  # empty, or holds a line starting with ``` (it could not sit in the fence)
            continue
    pid = record.get("problem_id", record.get("id"))
    meta = tuple((k, str(record[k])) for k in ("difficulty", "url") if isinstance(record.get(k), str) and record[k])
    return Example(id=f"apps-{pid}" if isinstance(pid, (int, str)) and str(pid) else default_id,
                   question=code_question(question, starter, fn_name), solution=solution,
                   answer=extract_program(solution) or "", task="code", meta=meta, tests=tests)


def read_apps(path: str | os.PathLike) -> tuple[list[Example], list[str]]:
    """(examples, ids of the problems skipped for having no tests) of an APPS JSONL file."""
    stem = pathlib.Path(path).stem
    examples, untested = [], []
    for i, (where, rec) in enumerate(read_records(path, max_line_bytes=APPS_MAX_LINE_BYTES)):
        default_id = f"apps-{stem}-{i}"
        tests = apps_tests(rec, where)
        if tests is None:
            field(rec, "question", where)  # a record without a question is malformed all the same
            pid = rec.get("problem_id", rec.get("id"))
            untested.append(f"apps-{pid}" if pid is not None else default_id)
            continue
        examples.append(apps_example(rec, where, default_id, *tests))
    if not examples:
        raise DataError(f"{path}: no problem has tests (field \"input_output\" is empty on every line)")
    return examples, untested


def load_apps_jsonl(path: str | os.PathLike, *, limit: int | None = None) -> list[Example]:
    """Load an APPS JSONL file as code `Example`s; problems without tests are skipped (logged)."""
    examples, untested = read_apps(path)
    if untested:
        logging.info("%s: skipped %d problems without tests (empty input_output)", path, len(untested))
    return take(examples, limit)
