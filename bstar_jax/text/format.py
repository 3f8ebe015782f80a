"""The prompt and response format, the official code's (docs/algorithm.md#prompt-and-response-format).

The prompt ends with "\\n\\n", steps are separated by a blank line and the response ends with
"\\n\\n# Answer\\n\\n{a}". Every answer-extraction rule in the project splits on `ANSWER_MARKER`.
"""
from __future__ import annotations

from typing import Sequence

ANSWER_MARKER = "\n\n# Answer\n\n"
STEP_SEPARATOR = "\n\n"


def format_prompt(question: str) -> str:
    """The generation prompt (docs/algorithm.md#prompt-and-response-format): "# Question\\n\\n{q}\\n\\n# Solution\\n\\n"."""
    return f"# Question\n\n{question}\n\n# Solution\n\n"


def format_response(steps: Sequence[str], answer: str) -> str:
    """Steps joined by a blank line, then "\\n\\n# Answer\\n\\n{answer}" (docs/algorithm.md#prompt-and-response-format).

    With no steps the response is "# Answer\\n\\n{answer}" (the prompt already ends in "\\n\\n").
    """
    for s in steps:
        if not s.strip() or STEP_SEPARATOR in s:
            raise ValueError(f"a step must be non-empty and contain no blank line: {s!r}")
    if not steps:
        return ANSWER_MARKER.lstrip("\n") + answer
    return STEP_SEPARATOR.join(steps) + ANSWER_MARKER + answer


def split_steps(response: str) -> tuple[list[str], str | None]:
    """Inverse of `format_response`: (steps, answer), answer None when there is no marker.

    The answer is the text after the LAST marker (as the official extraction), stripped; steps
    are the stripped non-empty blank-line-separated pieces before it.
    """
    body, answer = response, None
    head = ANSWER_MARKER.lstrip("\n")
    if ANSWER_MARKER in response:
        body, _, answer = response.rpartition(ANSWER_MARKER)
    elif response.startswith(head):
        body, answer = "", response[len(head):]
    steps = [s.strip() for s in body.split(STEP_SEPARATOR) if s.strip()]
    return steps, None if answer is None else answer.strip()
