"""GSM8K from JSONL (fields `question`, `answer`), converted to the "# Answer" step format.

A GSM8K answer is worked lines with calculator tags `<<48/2=24>>`, then `#### 72`. Each line
becomes one step and the tags are kept: the distinct-equations diversity metric counts them
(paper §2.2). The TFDS route is in `gsm8k_tfds.py`.
"""
from __future__ import annotations

import os
import pathlib
import re

from bstar_jax.text import format as fmt
from bstar_jax.data.records import DataError, Example, field, read_records, record_id, take

_NUMBER_WITH_COMMAS = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")


def convert_gsm8k_answer(text: str, where: str) -> tuple[str, str]:
    """(solution in step format, final answer) from a GSM8K-format answer ending "#### N".

    Thousands separators in N are dropped ("1,000" -> "1000"), as the official GSM8K
    evaluation does before comparing numbers (docs/algorithm.md#rewards).
    """
    work, sep, final = text.rpartition("####")
    if not sep:
        raise DataError(f'{where}: GSM8K answer has no "#### <answer>" line')
    answer = final.strip()
    if not answer:
        raise DataError(f'{where}: GSM8K answer is empty after "####"')
    if _NUMBER_WITH_COMMAS.fullmatch(answer):
        answer = answer.replace(",", "")
    steps = [line.strip() for line in work.splitlines() if line.strip()]
    return fmt.format_response(steps, answer), answer


def gsm8k_example(record: dict, where: str, default_id: str, task: str = "gsm8k") -> Example:
    """One `Example` from a {question, answer} record (GSM8K or GSM-Symbolic format)."""
    question = field(record, "question", where).strip()
    solution, answer = convert_gsm8k_answer(field(record, "answer", where), where)
    return Example(id=record_id(record, default_id), question=question, solution=solution,
                   answer=answer, task=task)


def load_gsm8k_jsonl(path: str | os.PathLike, *, limit: int | None = None) -> list[Example]:
    """Load a GSM8K JSONL file; ids are "gsm8k-{file stem}-{index}" unless records have one."""
    stem = pathlib.Path(path).stem
    examples = [gsm8k_example(rec, where, f"gsm8k-{stem}-{i}")
                for i, (where, rec) in enumerate(read_records(path))]
    return take(examples, limit)
