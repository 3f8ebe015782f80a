"""PRM training records: one labelled solution, (question, steps, labels) in the prm-v4 layout.

The steps joined by "\\n\\n" are the response; the last step may be the answer
"# Answer\\n\\n{a}" with its own label (as `labelling.label_steps` writes them). Labelling
(rewards/labelling.py) produces these records and PRM training (rewards/prm_train.py) reads them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bstar_jax.text.format import ANSWER_MARKER, STEP_SEPARATOR

ANSWER_HEAD = ANSWER_MARKER.lstrip("\n")  # "# Answer\n\n": the answer step of a record


@dataclasses.dataclass(frozen=True)
class PRMRecord:
    """One labelled solution: a label in [0, 1] per step (hard 0/1 or a soft fraction)."""
    question: str
    steps: tuple
    labels: tuple


def as_record(x, index: int = 0) -> PRMRecord:
    """A PRMRecord from a PRMRecord, a (question, steps, labels) tuple, or a dict with the
    fields question/steps/labels or the official prm-v4 input/output/label. Checked."""
    if isinstance(x, PRMRecord):
        rec = x
    elif isinstance(x, dict):
        try:
            q = x["question"] if "question" in x else x["input"]
            steps = x["steps"] if "steps" in x else x["output"]
            labels = x["labels"] if "labels" in x else x["label"]
        except KeyError as e:
            raise ValueError(f"PRM record {index}: missing field {e.args[0]!r} "
                             "(want question/steps/labels or input/output/label)") from None
        rec = PRMRecord(q, tuple(steps), tuple(labels))
    else:
        try:
            q, steps, labels = x
        except (TypeError, ValueError):
            raise ValueError(f"PRM record {index}: expected (question, steps, labels), got "
                             f"{type(x).__name__}") from None
        rec = PRMRecord(q, tuple(steps), tuple(labels))
    _check_record(rec, index)
    return rec


def _check_record(rec: PRMRecord, index: int) -> None:
    where = f"PRM record {index} (question {str(rec.question)[:40]!r})"
    if not isinstance(rec.question, str):
        raise ValueError(f"{where}: the question must be a string")
    if not rec.steps:
        raise ValueError(f"{where}: no steps")
    if len(rec.labels) != len(rec.steps):
        raise ValueError(f"{where}: {len(rec.labels)} labels for {len(rec.steps)} steps")
    for k, step in enumerate(rec.steps):
        if not isinstance(step, str) or not step.strip():
            raise ValueError(f"{where}: step {k} is empty or not a string")
        is_answer = k == len(rec.steps) - 1 and step.startswith(ANSWER_HEAD)
        if STEP_SEPARATOR in step and not is_answer:
            raise ValueError(f"{where}: step {k} contains a blank line; split it into steps")
    labels = np.asarray(rec.labels, np.float64)
    if labels.ndim != 1 or not np.all(np.isfinite(labels)) or labels.min() < 0 or labels.max() > 1:
        raise ValueError(f"{where}: labels must be numbers in [0, 1], got {list(rec.labels)}")
