"""ARC-Challenge (and ARC-Easy) multiple choice from JSONL.

Accepted shapes: the HF `allenai/ai2_arc` rows (`question` a string, `choices` = {"text": [..],
"label": [..]}, `answerKey`) and the official ARC-V1 JSONL (`question` = {"stem", "choices":
[{"text", "label"}, ..]}, `answerKey`). The question text is the stem and one line per choice,
`(A) text`, as the official repo builds it (paper App. B.4); the answer is the label.
ARC has no worked solutions: the reference solution is one step naming the right choice.
"""
from __future__ import annotations

import os
import pathlib

from bstar_jax.text import format as fmt
from bstar_jax.data.records import DataError, Example, field, read_records, record_id, take


def _choices(record: dict, where: str) -> tuple[str, list[tuple[str, str]]]:
    q = record.get("question")
    if isinstance(q, dict):  # official ARC-V1 shape
        stem = field(q, "stem", where + ' (in "question")')
        raw = field(q, "choices", where + ' (in "question")', list)
        pairs = []
        for c in raw:
            if not isinstance(c, dict):
                raise DataError(f'{where}: each choice must be an object with "label" and "text"')
            pairs.append((str(field(c, "label", where, (str, int))), field(c, "text", where)))
        return stem, pairs
    stem = field(record, "question", where)
    choices = field(record, "choices", where, dict)
    labels = field(choices, "label", where + ' (in "choices")', list)
    texts = field(choices, "text", where + ' (in "choices")', list)
    if len(labels) != len(texts) or not labels:
        raise DataError(f"{where}: choices have {len(labels)} labels and {len(texts)} texts")
    return stem, [(str(label), str(text)) for label, text in zip(labels, texts)]


def format_arc_question(stem: str, choices: list[tuple[str, str]]) -> str:
    """The stem, then one line per choice: "(A) text"."""
    lines = [stem.strip()] + [f"({label}) {text.strip()}" for label, text in choices]
    return "\n".join(lines).strip()


def arc_example(record: dict, where: str, default_id: str) -> Example:
    """One `Example` from an ARC record (either shape); the answer is the choice label."""
    stem, choices = _choices(record, where)
    key = str(field(record, "answerKey", where, (str, int))).strip()
    by_label = dict(choices)
    if key not in by_label:
        raise DataError(f'{where}: answerKey "{key}" is not one of the labels {list(by_label)}')
    steps = [f"The correct choice is ({key}) {by_label[key].strip()}."]
    return Example(id=record_id(record, default_id), question=format_arc_question(stem, choices),
                   solution=fmt.format_response(steps, key), answer=key, task="arc")


def load_arc_jsonl(path: str | os.PathLike, *, limit: int | None = None) -> list[Example]:
    """Load an ARC JSONL file; ids are the records' own or "arc-{stem}-{index}"."""
    stem = pathlib.Path(path).stem
    examples = [arc_example(rec, where, f"arc-{stem}-{i}")
                for i, (where, rec) in enumerate(read_records(path))]
    return take(examples, limit)
