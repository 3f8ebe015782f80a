"""The prompt and solution format of programming problems (docs/code.md#prompt-and-solution-format).

A code question is the problem statement, then the starter code (the function signature, or
APPS's starter code) in a ```python fence, then the APPS instruction line naming how the
program is tested:

    Return the sum of the numbers in xs that are divisible by 3.

    ```python
    def sum_multiples(xs):
    ```

    Use Call-Based format

The prompt is the project's usual `fmt.format_prompt(question)`. A solution is optional
reasoning steps, then the answer block holding the whole program in a fence:

    # Answer

    ```python
    def sum_multiples(xs):
        return sum(x for x in xs if x % 3 == 0)
    ```

`extract_program` reads the program back out of a sampled response; it runs in time linear in
the response (plain `str.find`, no regular expression) and never raises.
"""
from __future__ import annotations

from typing import Sequence

from bstar_jax.text import format as fmt

CALL_BASED = "Use Call-Based format"  # the APPS prompt's instruction lines
STANDARD_INPUT = "Use Standard Input format"
FENCE = "```"
_OPEN_FENCE = FENCE + "python\n"


def code_question(statement: str, starter_code: str = "", fn_name: str | None = None) -> str:
    """The question text of a programming problem: statement, starter code fenced, instruction.

    The instruction is `CALL_BASED` when the tests call `fn_name`, else `STANDARD_INPUT`.
    """
    parts = [statement.strip()] if statement.strip() else []
    if starter_code.strip():
        parts.append(_OPEN_FENCE + starter_code.strip("\n").rstrip() + "\n" + FENCE)
    parts.append(CALL_BASED if fn_name else STANDARD_INPUT)
    return "\n\n".join(parts)


def code_prompt(statement: str, starter_code: str = "", fn_name: str | None = None) -> str:
    """The generation prompt: `fmt.format_prompt` of `code_question(...)`."""
    return fmt.format_prompt(code_question(statement, starter_code, fn_name))


def format_code_response(program: str, steps: Sequence[str] = ()) -> str:
    """Optional reasoning steps, then the answer block with `program` in a ```python fence.

    The program may hold blank lines (only the steps may not); it must not hold a line that
    starts with ``` (the closing fence), which no Python program needs outside a string.
    """
    body = program.strip("\n").rstrip()
    if not body.strip():
        raise ValueError("the program is empty")
    if ("\n" + body).find("\n" + FENCE) >= 0:
        raise ValueError("the program has a line starting with ```, which would close its fence")
    return fmt.format_response(list(steps), _OPEN_FENCE + body + "\n" + FENCE)


def extract_program(response) -> str | None:
    """The program in a sampled response; None when there is none (or `response` is not text).

    The text after the FIRST answer marker (a program may itself contain the marker's text),
    or the whole response when it has none. In that text, the body of the first ``` fence (its
    info string, e.g. "python", dropped; an unclosed fence runs to the end), or, when there is
    no fence, the whole text. Trailing whitespace is removed.
    """
    if not isinstance(response, str):
        return None
    head = fmt.ANSWER_MARKER.lstrip("\n")
    at = response.find(fmt.ANSWER_MARKER)
    if at >= 0:
        text = response[at + len(fmt.ANSWER_MARKER):]
    elif response.startswith(head):
        text = response[len(head):]
    else:
        text = response
    opened = text.find(FENCE)
    if opened >= 0:
        line_end = text.find("\n", opened)
        if line_end < 0:  # a fence opener and nothing after it
            return None
        body = text[line_end + 1:]
        closed = ("\n" + body).find("\n" + FENCE)  # a closing fence starts a line
        text = body if closed < 0 else body[:closed]
    text = text.rstrip()
    return text if text.strip() else None
