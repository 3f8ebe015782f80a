"""MATH (Hendrycks et al.) from JSONL, converted to the "# Answer" step format.

Accepted record shapes:
- Hendrycks / MATH-500: `problem`, `solution` (with `\\boxed{}`), optional `answer`, `level`,
  `type` or `subject`, `unique_id`;
- the B-STaR SFT data (`AndrewZeng/math-trn-format`): `query`, `output` already in step format.

A Hendrycks solution is one or a few paragraphs; steps are its paragraphs split further at
sentence ends outside math mode (PRM800K-style steps are about a sentence of reasoning each).
"""
from __future__ import annotations

import os
import pathlib
import re

from bstar_jax.text import format as fmt
from bstar_jax.data.records import DataError, Example, field, read_records, record_id, take

_BLANK_LINE = re.compile(r"\n\s*\n")
_ENV = re.compile(r"\\(begin|end)\{[^}]*\}")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed x`) with balanced braces."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i):  # "\boxed 5": up to the next space or "$"
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1).rstrip(".,;") or None if m else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c in "{}" and text[j - 1] == "\\":
            continue  # a literal \{ or \}
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return text[i + 1:j]
    return None  # unbalanced


def solution_steps(solution: str) -> list[str]:
    """Split a MATH solution into steps: paragraphs, then sentences ending outside math mode."""
    steps = []
    for para in _BLANK_LINE.split(solution):
        steps.extend(s for s in _sentences(para.strip()) if s)
    return steps


def _sentences(text: str) -> list[str]:
    out, begin, i, in_math, env = [], 0, 0, None, 0
    while i < len(text):
        m = _ENV.match(text, i)
        if m:  # \begin{align} ... \end{align} is math, whatever its contents
            env += 1 if m.group(1) == "begin" else -1
            i = m.end()
            continue
        two = text[i:i + 2]
        if in_math is None and env == 0:
            if two in ("$$", "\\[", "\\("):
                in_math, i = {"$$": "$$", "\\[": "\\]", "\\(": "\\)"}[two], i + 2
                continue
            if text[i] == "$" and (i == 0 or text[i - 1] != "\\"):
                in_math, i = "$", i + 1
                continue
            nxt = text[i + 1:i + 3]
            if text[i] in ".!?" and len(nxt) == 2 and nxt[0].isspace() and not nxt[1].islower() \
                    and not nxt[1].isspace():
                out.append(text[begin:i + 1].strip())
                begin = i + 1
        elif in_math is not None and text.startswith(in_math, i) and text[i - 1] != "\\":
            i += len(in_math)
            in_math = None
            continue
        i += 1
    out.append(text[begin:].strip())
    return [s for s in out if s]


def math_example(record: dict, where: str, default_id: str) -> Example:
    """One `Example` from a Hendrycks-format or math-trn-format record."""
    if "query" in record and "output" in record:  # already in step format
        question = field(record, "query", where).strip()
        solution = field(record, "output", where).strip()
        answer = fmt.split_steps(solution)[1]
        if not answer:
            raise DataError(f'{where}: "output" has no "# Answer" section')
        return Example(record_id(record, default_id), question, solution, answer, "math")
    question = field(record, "problem", where).strip()
    raw = field(record, "solution", where)
    answer = record.get("answer") if isinstance(record.get("answer"), str) else last_boxed(raw)
    if answer is None or not answer.strip():
        raise DataError(f'{where}: no answer: field "solution" has no balanced \\boxed{{...}}')
    steps = solution_steps(raw)
    if not steps:
        raise DataError(f'{where}: field "solution" has no text')
    meta = tuple((k, str(record[k])) for k in ("level", "type", "subject") if k in record)
    return Example(id=record_id(record, default_id), question=question,
                   solution=fmt.format_response(steps, answer.strip()),
                   answer=answer.strip(), task="math", meta=meta)


def load_math_jsonl(path: str | os.PathLike, *, limit: int | None = None) -> list[Example]:
    """Load a MATH JSONL (or JSON list) file; ids are the records' own or "math-{stem}-{index}"."""
    stem = pathlib.Path(path).stem
    examples = [math_example(rec, where, f"math-{stem}-{i}")
                for i, (where, rec) in enumerate(read_records(path))]
    return take(examples, limit)
