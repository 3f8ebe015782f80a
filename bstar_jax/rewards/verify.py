"""Final-answer reward: answer extraction and equivalence for gsm8k, math and arc.

A response is reasoning steps, then `"\\n\\n# Answer\\n\\n{answer}"`
(docs/algorithm.md#prompt-and-response-format); MATH is graded as PRM800K grades it and ARC by
the choice letter, as in the official code. Three modes:

- `"normalized"` (default; docs/algorithm.md#paper-vs-official-code): the answer after the last
  `# Answer` heading (or `####` for gsm8k, or the last `\\boxed{}`) compared after normalisation:
  MATH by the PRM800K grader (`math_normalize`), GSM8K numerically, ARC by the choice letter.
- `"exact"`: the official training-time check, exact string equality of the text after the last
  `"\\n\\n# Answer\\n\\n"` (cut at EOS, trailing whitespace removed) with the gold's same text;
  for arc the official regex (its first match) and a case-insensitive letter compare.
- `"math_verify"` (MATH only): the answers the normalized mode extracts, compared by Hugging Face's
  math-verify (numeric, symbolic, set and interval equivalence), in a pool of worker processes
  (`math_verify_pool`); grade many responses with `are_correct`, which uses the pool once.

GSM8K numbers: the answer is the first number in the answer text, with `$`, thousands commas,
units and trailing words ignored, `a/b` and `\\frac{a}{b}` evaluated, compared with the gold as an
exact rational. The official `gsm8k_test.py` rounds the prediction to an integer (so 17.6 counts
as 18); here 18.0 == 18 but 17.6 != 18, and a zero denominator is no answer (the official code
takes the numerator).

Every check runs in time linear in the text (no regex here can backtrack super-linearly, and
answers over MAX_ANSWER_CHARS are compared as exact strings, not normalised); tests/unit/rewards/test_verify.py
fuzzes each task with adversarial 100,000-character strings (math_verify: the extraction is the
same, and each comparison has a deadline; tests/unit/rewards/test_math_verify.py). Malformed
input never raises: None or an answer-less response is simply incorrect, bytes are decoded as
UTF-8 with replacement characters. Only an unknown task or mode (or math_verify on a task other
than math) raises ValueError.
"""
from __future__ import annotations

import functools
import numbers
import re
from fractions import Fraction

from bstar_jax.core import names
from bstar_jax.rewards import math_verify_pool
from bstar_jax.rewards.math_normalize import MAX_ANSWER_CHARS, math_answers_equal

TASKS = names.TASKS
MODES = names.ANSWER_CHECKS
MATH_VERIFY_TASKS = ("math",)  # the tasks "math_verify" grades
ANSWER_SEP = "\n\n# Answer\n\n"  # every extraction in the official code splits on this
EOS_STRINGS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>",
               "<eos>", "<|end|>")

_EOS_RE = re.compile("|".join(re.escape(e) for e in EOS_STRINGS))
_HEADING_RE = re.compile(r"^[ \t]*#[ \t]*answer\b[ \t]*:?", re.I | re.M)
_GSM_LINE_RE = re.compile(r"^[ \t]*####[ \t]*\S", re.M)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# No quantifier here can match what its neighbour matches (`[^{}]*` is stripped afterwards), so a
# match attempt is linear in the text: nested or adjacent `\s*` / `[^{}]*?` backtrack super-linearly.
_TEX_FRAC_RE = re.compile(r"\\[dtc]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_GSM_NUM_RE = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?")

# the official code's ARC answer pattern, verbatim (exact mode), and a stricter variant that wants a standalone letter
# (or digit: a few ARC items are keyed 1-4) so that "Final answer: The ..." does not read as T.
_ARC_OFFICIAL_RE = re.compile(r"Final answer:\s*[\[\(]?([A-Za-z])[\]\)]?")
_ARC_RE = re.compile(
    r"final\s+answer\s*(?:is\s*)?[:\-]?\s*[\[\(]?\s*([A-Za-z]|[1-9])\s*[\]\)]?(?![A-Za-z0-9])", re.I)
_ARC_BARE_RE = re.compile(r"^[\[\(]?\s*([A-Za-z]|[1-9])\s*[\]\)]?(?![A-Za-z0-9])")


# --------------------------------------------------------------------------- input hygiene


def _check_task(task) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def _to_text(x) -> str | None:
    """str as is, bytes decoded (invalid UTF-8 replaced), numbers printed, anything else None."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).decode("utf-8", errors="replace")
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return str(x)
    return None


def _cut_eos(text: str) -> str:
    m = _EOS_RE.search(text)
    return text[:m.start()] if m else text


# --------------------------------------------------------------------------- locating answers


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (balanced braces), else None."""
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return None
    i = matches[-1].end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # `\boxed 5`
        token = re.match(r"[^\s$]+", text[i:])
        return token.group(0) if token else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None  # unbalanced: a truncated response


def _block(text: str, start: int) -> str | None:
    """The answer written from `start` on: up to the next blank line, trimmed; None if empty."""
    answer = text[start:].strip()
    cut = answer.find("\n\n")
    if cut >= 0:
        answer = answer[:cut].rstrip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    return answer or None


def _heading_end(text: str) -> int:
    """End offset of the last `# Answer` heading, or -1."""
    end = -1
    for m in _HEADING_RE.finditer(text):
        end = m.end()
    return end


def _gsm_marker_end(text: str) -> int:
    i = text.rfind("####")
    return -1 if i < 0 else i + 4


def _clean_math(answer: str | None) -> str | None:
    """Unwrap `\\boxed{}` and `$...$` around an answer written after the heading."""
    if answer is None:
        return None
    if _BOXED_RE.search(answer):
        answer = last_boxed(answer)  # None when unbalanced (a truncated answer)
        if not answer:
            return None
    for left, right in _MATH_DELIMS:
        if len(answer) > len(left) + len(right) and answer.startswith(left) \
                and answer.endswith(right):
            answer = answer[len(left):-len(right)].strip()
            break
    return answer or None


def _arc_letter(text: str) -> tuple[int, str] | None:
    """(position, letter) of the last ARC choice the text commits to, else None."""
    best = None
    for m in _ARC_RE.finditer(text):
        best = (m.start(), m.group(1).upper())
    end = _heading_end(text)
    if end >= 0 and (best is None or end > best[0]):
        block = _block(text, end)
        m = _ARC_BARE_RE.match(block) if block else None
        if m:
            best = (end, m.group(1).upper())
    return best


@functools.lru_cache(maxsize=8192)
def _extract(text: str, task: str) -> str | None:
    text = _cut_eos(text)
    if task == "arc":
        found = _arc_letter(text)
        return found[1] if found else None
    head = _heading_end(text)
    if task == "gsm8k":
        mark = _gsm_marker_end(text)
        if mark > head:
            line = text[mark:].lstrip("# \t").split("\n", 1)[0]
            return _block(line, 0)
    if head >= 0:
        return _clean_math(_block(text, head))
    boxed = last_boxed(text)
    return boxed or None


def extract_answer(text, task: str) -> str | None:
    """The final answer a response commits to, as written (trimmed), or None.

    gsm8k: after the last `# Answer` heading or `####` marker, whichever comes later, else the
    last `\\boxed{}`; math: after the last `# Answer` heading (a `\\boxed{}` or `$..$` around it
    unwrapped), else the last `\\boxed{}`; arc: the upper-case choice letter of the last
    `Final answer: (X)` or `# Answer` block. Text after an EOS string is ignored.
    """
    _check_task(task)
    text = _to_text(text)
    return None if text is None else _extract(text, task)


def answer_of_reference(gold, task: str) -> str | None:
    """The gold answer of a reference: a full solution (`#### N`, `# Answer`, `\\boxed{}`,
    `Final answer: (X)`) or a bare answer string such as "18", "\\frac{1}{2}" or "B"."""
    _check_task(task)
    text = _to_text(gold)
    if text is None:
        return None
    if task == "arc":
        m = _ARC_BARE_RE.match(text.strip())
        if m and len(text.strip()) <= 3:
            return m.group(1).upper()
    found = _extract(text, task)
    if found is not None:
        return found
    return text.strip() or None


# --------------------------------------------------------------------------- comparing


def gsm8k_number(answer: str) -> Fraction | None:
    """The first number of a GSM8K answer as an exact rational (`$1,234.50` -> 2469/2)."""
    s = answer.replace("\u2212", "-").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _THOUSANDS_RE.sub("", s)
    s = _TEX_FRAC_RE.sub(lambda m: m.group(1).strip() + "/" + m.group(2).strip(), s)
    m = _GSM_NUM_RE.search(s)
    if m is None:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError):  # e.g. > 4300 digits
        return None
    return value


@functools.lru_cache(maxsize=1 << 16)
def answers_match(answer: str, gold_answer: str, task: str) -> bool:
    """Normalised equivalence of two extracted answers (the prediction first, then the gold)."""
    _check_task(task)
    if not isinstance(answer, str) or not isinstance(gold_answer, str):
        return False
    if max(len(answer), len(gold_answer)) > MAX_ANSWER_CHARS:
        return answer.strip() == gold_answer.strip()
    if task == "gsm8k":
        pred, gold = gsm8k_number(answer), gsm8k_number(gold_answer)
        return pred is not None and gold is not None and pred == gold
    if task == "math":
        return math_answers_equal(answer, gold_answer)
    pred, gold = _ARC_BARE_RE.match(answer.strip()), _ARC_BARE_RE.match(gold_answer.strip())
    return bool(pred and gold) and pred.group(1).upper() == gold.group(1).upper()


def _exact_tail(text: str) -> str | None:
    text = _cut_eos(text)
    if ANSWER_SEP not in text:
        return None
    return text.split(ANSWER_SEP)[-1].rstrip()


def _exact_correct(text: str, gold: str, task: str) -> bool:
    if task == "arc":
        m = _ARC_OFFICIAL_RE.search(text)
        ref = answer_of_reference(gold, "arc")
        return bool(m and ref) and m.group(1).lower() == ref.lower()
    pred = _exact_tail(text)
    if ANSWER_SEP in gold:
        ref = _exact_tail(gold)
    elif task == "gsm8k" and "####" in gold:
        ref = gold[gold.rfind("####") + 4:].strip()
    else:
        ref = gold.strip()
    return pred is not None and pred == ref


def _check_mode(mode, task: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "math_verify" and task not in MATH_VERIFY_TASKS:
        raise ValueError(f"mode 'math_verify' grades MATH answers (task 'math'), not task {task!r}; "
                         f"use 'normalized' or 'exact'")
    return mode


def is_correct(response, gold, task: str, *, mode: str = "normalized") -> bool:
    """True iff the response's final answer matches the gold (the official graders; docs/algorithm.md#rewards).

    `gold` is a reference solution or a bare answer (see `answer_of_reference`). `mode` is
    "normalized" (the grader), "exact" (the official training-time string match) or "math_verify"
    (math-verify's equivalence; to grade many responses, `are_correct` is faster). A response
    without an answer, or None, is incorrect; unknown task or mode raise ValueError.
    """
    _check_mode(mode, _check_task(task))
    if mode == "math_verify":
        return are_correct([response], [gold], task, mode=mode)[0]
    text, gold_text = _to_text(response), _to_text(gold)
    if text is None or gold_text is None:
        return False
    if mode == "exact":
        return _exact_correct(text, gold_text, task)
    pred = _extract(text, task)
    ref = answer_of_reference(gold_text, task)
    return pred is not None and ref is not None and answers_match(pred, ref, task)


def are_correct(responses, golds, task: str, *, mode: str = "normalized", pool=None) -> list[bool]:
    """`[is_correct(r, g, task, mode=mode) for r, g in zip(responses, golds)]`, for a batch.

    With mode "math_verify" the answers are extracted here and the distinct (answer, gold) pairs
    go to math-verify's process pool in one call (pool: a `math_verify_pool.make_pool()`, default
    the shared one). An answer identical to the gold's is correct without the pool (math-verify
    would compare the two equal strings), and answers over MAX_ANSWER_CHARS are compared as exact
    strings, as in "normalized". A pair that passes its deadline or crashes its worker is
    incorrect (and logged).
    """
    _check_mode(mode, _check_task(task))
    if len(responses) != len(golds):
        raise ValueError(f"are_correct: {len(responses)} responses but {len(golds)} golds")
    if mode != "math_verify":
        return [is_correct(r, g, task, mode=mode) for r, g in zip(responses, golds)]
    out = [False] * len(responses)
    pairs, where = [], []
    for i, (response, gold) in enumerate(zip(responses, golds)):
        text, gold_text = _to_text(response), _to_text(gold)
        if text is None or gold_text is None:
            continue
        pred, ref = _extract(text, task), answer_of_reference(gold_text, task)
        if pred is None or ref is None:
            continue
        if pred.strip() == ref.strip() or max(len(pred), len(ref)) > MAX_ANSWER_CHARS:
            out[i] = pred.strip() == ref.strip()
            continue
        pairs.append((pred, ref))
        where.append(i)
    for i, ok in zip(where, math_verify_pool.answers_equivalent(pairs, pool=pool)):
        out[i] = ok
    return out


def has_answer_format(text, task: str = "math") -> bool:
    """True iff the response carries an answer block, i.e. counts as a valid sample.

    As in the official code, samples without `"\\n\\n# Answer\\n\\n"` are dropped before scoring. For
    gsm8k a `####` line also counts; for arc (whose sampler stops at a blank line) the official
    `Final answer:` pattern does.
    """
    _check_task(task)
    text = _to_text(text)
    if text is None:
        return False
    if ANSWER_SEP in text:
        return True
    if task == "gsm8k":
        return _GSM_LINE_RE.search(text) is not None
    if task == "arc":
        return _ARC_OFFICIAL_RE.search(text) is not None
    return False
