"""MATH answer equivalence: the two normalisations of the PRM800K grader (the paper's evaluation, App. A).

The official evaluation grades a MATH answer as correct when either

(a) the Hendrycks MATH normalisation (`hendrycks_normalize`) gives equal strings, or
(b) the PRM800K normalisation (`prm800k_normalize`) gives equal strings, or, for tuples and
    intervals, the elements agree one by one with the same brackets (`math_answers_equal`).

The official code converts LaTeX to text with pylatexenc; `latex_to_text` is a small plain-Python
stand-in that handles what final answers contain (fractions, roots, formatting macros, symbols).
Both sides of a comparison go through the same function, so it only has to be deterministic and
keep different answers apart, not reproduce pylatexenc character for character.

Sympy equivalence is switched off in the official B-STaR grader, and so it is here: `0.25`
and `\\frac14` are different answers, as they are in the reported MATH500 numbers. Inside tuples
the element check that replaces sympy accepts only equal canonical integers and elements equal
under (a); unreduced fractions never match reduced ones (`2/4` vs `1/2`), as in PRM800K.
"""
from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

_CACHE = 1 << 16
MAX_ANSWER_CHARS = 1000  # longer "answers" are compared as exact strings, never normalised

# --------------------------------------------------------------------------- shared pieces


def _unwrap_whole(s: str, macro: str) -> str:
    """`\\text{abc}` -> `abc` when the macro's group spans the whole string (balanced braces)."""
    head = macro + "{"
    if not (s.startswith(head) and s.endswith("}")):
        return s
    depth = 0
    for i in range(len(macro), len(s)):
        c = s[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[len(head):-1] if i == len(s) - 1 else s
    return s


_THOUSANDS_RE = re.compile(r"(\d),(\d\d\d)($|\D)")


def strip_thousands_commas(expr: str) -> str:
    """`1,234,567` -> `1234567`, leaving tuple commas such as `(1,2)` alone."""
    while True:
        new = _THOUSANDS_RE.sub(r"\1\2\3", expr)
        if new == expr:
            return new
        expr = new


def _as_integer(expr: str) -> int | None:
    """The integer a numeric string denotes (within 1e-7, like PRM800K), else None."""
    expr = strip_thousands_commas(expr)
    try:
        d = Decimal(expr.strip())
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d.adjusted() > 100:  # refuse absurd exponents (1e999999999)
        return None
    n = int(d.to_integral_value())
    return n if abs(d - n) <= Decimal("1e-7") else None


# --------------------------------------------------------------------------- (a) Hendrycks


def _fix_sqrt(s: str) -> str:
    """`\\sqrt3` / `\\sqrt 3` -> `\\sqrt{3}` (one character of shorthand)."""
    head, *tails = s.split("\\sqrt")
    out = [head]
    for t in tails:
        t = t.lstrip(" ")
        if t and t[0] not in "{[":
            t = "{" + t[0] + "}" + t[1:]
        out.append("\\sqrt" + t)
    return "".join(out)


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{b}` -> `\\frac{1}{b}`; unchanged when malformed."""
    head, *tails = s.split("\\frac")
    out = [head]
    for t in tails:
        out.append("\\frac")
        if t.startswith("{"):
            out.append(t)
            continue
        if len(t) < 2:
            return s
        a, b, rest = t[0], t[1], t[2:]
        out.append("{" + a + "}" + (b if b == "{" else "{" + b + "}") + rest)
    return "".join(out)


_INT_SLASH_INT_RE = re.compile(r"^(-?(?:0|[1-9]\d*))/(-?(?:0|[1-9]\d*))$")


@functools.lru_cache(maxsize=_CACHE)
def hendrycks_normalize(answer: str) -> str:
    """The Hendrycks MATH normalisation of a final answer (PRM800K's `math_normalize`).

    Strips an enclosing `\\text{}`, line breaks, `\\!`, `\\left`/`\\right`, `^\\circ`, `\\$`,
    `\\%`, units written as `\\text{ unit}` on the right and a short `x =` prefix; maps
    `\\dfrac`/`\\tfrac` to `\\frac`; fixes `\\frac12` and `\\sqrt3` shorthand; removes spaces;
    rewrites `0.5` as `\\frac{1}{2}` and an integer `a/b` as `\\frac{a}{b}`.
    """
    s = _unwrap_whole(answer.strip(), "\\text").strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = s.split("\\text{ ")[0]  # units written on the right: "5 \text{ cm}"
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0].strip()) <= 2:  # "x = 5", "k=3"
        s = parts[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    m = _INT_SLASH_INT_RE.match(s)
    if m:
        s = "\\frac{%s}{%s}" % m.groups()
    return s


# --------------------------------------------------------------------------- LaTeX to text

_SYMBOLS = {
    "pi": "pi", "infty": "inf", "cup": "U", "cap": "∩", "cdot": "*", "times": "*", "div": "/",
    "pm": "±", "mp": "∓", "le": "<=", "leq": "<=", "ge": ">=", "geq": ">=", "ne": "!=",
    "neq": "!=", "lt": "<", "gt": ">", "circ": "", "degree": "", "dots": "...", "ldots": "...",
    "cdots": "...", "in": "∈", "emptyset": "∅", "varnothing": "∅", "to": "->",
    "rightarrow": "->", "quad": " ", "qquad": " ", "displaystyle": "", "left": "", "right": "",
    "big": "", "Big": "", "bigg": "", "Bigg": "", "limits": "", "nolimits": "", "mid": "|",
    "vert": "|", "lvert": "|", "rvert": "|", "langle": "<", "rangle": ">", "prime": "'",
}
_KEEP_CONTENT = frozenset(
    "text textbf textit textrm textnormal texttt textsf emph mathrm mathbf mathit mathsf mathtt "
    "mathbb mathcal mathnormal mbox hbox fbox boxed operatorname bm boldsymbol".split()
)
_FRACS = frozenset(("frac", "dfrac", "tfrac", "cfrac"))
_SIMPLE_RE = re.compile(r"^-?[A-Za-z0-9.]+$")


class _Latex:
    """A tolerant one-pass reader of LaTeX math (unbalanced input never raises)."""

    def __init__(self, s: str):
        self.s, self.i = s, 0

    def macro_name(self) -> str:
        s, j = self.s, self.i + 1
        if j < len(s) and s[j].isalpha():
            while j < len(s) and s[j].isalpha():
                j += 1
        else:
            j = min(j + 1, len(s))
        name, self.i = s[self.i + 1:j], j
        return name

    def skip_spaces(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def argument(self) -> str:
        """The next `{group}` or single token, as text."""
        self.skip_spaces()
        s = self.s
        if self.i >= len(s):
            return ""
        if s[self.i] == "{":
            self.i += 1
            return self.run(closing="}")
        if s[self.i] == "\\":
            return self.macro(self.macro_name())
        self.i += 1
        return s[self.i - 1]

    def optional(self) -> str | None:
        self.skip_spaces()
        if self.i < len(self.s) and self.s[self.i] == "[":
            self.i += 1
            return self.run(closing="]")
        return None

    def macro(self, name: str) -> str:
        if name in _FRACS:
            num, den = self.argument(), self.argument()
            num = num if _SIMPLE_RE.match(num) else "(" + num + ")"
            den = den if _SIMPLE_RE.match(den) else "(" + den + ")"
            return num + "/" + den
        if name == "sqrt":
            index = self.optional()
            body = "sqrt(" + self.argument() + ")"
            return body if index is None else "root(" + index + ")" + body
        if name in _KEEP_CONTENT:
            return self.argument()
        if name in ("left", "right"):  # `\left.` is an invisible delimiter
            self.skip_spaces()
            if self.s.startswith(".", self.i):
                self.i += 1
            return ""
        if name in _SYMBOLS:
            return _SYMBOLS[name]
        if name in (",", ";", ":", " ", "\\"):
            return " "
        if name == "!":
            return ""
        return name  # unknown macros keep their name (\sin -> sin) so answers stay distinct

    def run(self, closing: str | None = None) -> str:
        out, s = [], self.s
        while self.i < len(s):
            c = s[self.i]
            if closing is not None and c == closing:
                self.i += 1
                break
            if c == "\\":
                out.append(self.macro(self.macro_name()))
            elif c == "{":
                self.i += 1
                out.append(self.run(closing="}"))
            elif c == "}":
                self.i += 1  # stray closing brace
            else:
                out.append(c)
                self.i += 1
        return "".join(out)


def latex_to_text(expr: str) -> str:
    """LaTeX math to plain text: `\\frac{1}{2}` -> `1/2`, `\\sqrt{2}` -> `sqrt(2)`, `\\pi` -> `pi`."""
    expr = expr.replace("\\frac", " \\frac")  # mixed numbers: 3\frac12 -> "3 1/2" -> 3+1/2
    try:
        return _Latex(expr).run().strip()
    except RecursionError:
        return expr


# --------------------------------------------------------------------------- (b) PRM800K

_UNITS_RE = re.compile(
    r"(?<![a-z])(?:degree|cm|centimeter|meter|mile|second|minute|hour|day|week|month|year|foot"
    r"|feet|inch|yard)(?:es)?s? *(?:\^[0-9]+)?"
)
_DEGREE_RE = re.compile(r"\^ *(?:\{ *\\circ *\}|\\circ)|°")
_LATEX_COMMA_RE = re.compile(r",\\! *")
_MINUS_RE = re.compile(r"- *")
_MIXED_RE = re.compile(r"([0-9]) +([0-9])")


@functools.lru_cache(maxsize=_CACHE)
def prm800k_normalize(expr: str) -> str:
    """The PRM800K grader's normalisation of a final answer.

    Removes an enclosing `\\text{}`, `$`, `%`, units and `^\\circ`; maps " or " / " and " to
    commas and million/billion/trillion to powers of ten; converts LaTeX to text; joins mixed
    numbers (`3 1/2` -> `3+1/2`); removes spaces and braces; lowercases; canonicalises integers.
    """
    expr = _unwrap_whole(expr.strip(), "\\text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9")
    expr = expr.replace("trillion", "*10^12")
    expr = _UNITS_RE.sub("", expr)
    expr = _DEGREE_RE.sub("", expr)
    if len(expr) > 1 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _LATEX_COMMA_RE.sub("", expr)
    n = _as_integer(expr) if "," not in expr else None
    if n is not None:
        expr = str(n)
    if "\\" in expr:
        expr = latex_to_text(expr)
    expr = _MINUS_RE.sub("-", expr)
    expr = _MIXED_RE.sub(r"\1+\2", expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    n = _as_integer(expr)
    return str(n) if n is not None else expr


# --------------------------------------------------------------------------- grading

_BRACKETS = "()[]"
_FRAC_RE = re.compile(r"^-?[0-9]+/0*[1-9][0-9]*$")


def split_tuple(expr: str) -> list[str]:
    """Elements of a bracketed tuple or interval (`(1,2]` -> ["1", "2"]); else [expr]."""
    expr = strip_thousands_commas(expr)
    if not expr:
        return []
    if (len(expr) > 2 and expr[0] in _BRACKETS and expr[-1] in _BRACKETS
            and not any(c in _BRACKETS for c in expr[1:-1])):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def _elements_equal(gold: str, given: str) -> bool:
    """One tuple element; stands in for the grader's (disabled) sympy check."""
    if gold == given:
        return True
    if _FRAC_RE.match(gold) and _FRAC_RE.match(given):
        return False  # fractions must match exactly
    gold_int, given_int = _as_integer(gold), _as_integer(given)
    if (gold_int is None) != (given_int is None):
        return False
    if gold_int is not None:
        return gold_int == given_int
    return hendrycks_normalize(gold) == hendrycks_normalize(given)


@functools.lru_cache(maxsize=_CACHE)
def math_answers_equal(given: str, gold: str) -> bool:
    """True iff a predicted MATH answer matches the gold answer (the official grader).

    Answers over MAX_ANSWER_CHARS (a runaway sample, not a final answer) are compared as exact
    strings, so that grading time stays bounded whatever the text."""
    if not given.strip():
        return False
    if max(len(given), len(gold)) > MAX_ANSWER_CHARS:
        return given.strip() == gold.strip()
    if hendrycks_normalize(gold) == hendrycks_normalize(given):
        return True
    gold_n, given_n = prm800k_normalize(gold), prm800k_normalize(given)
    if gold_n == given_n:
        return True
    if not given_n or not gold_n:
        return False
    gold_elems, given_elems = split_tuple(gold_n), split_tuple(given_n)
    if len(gold_elems) < 2 or len(gold_elems) != len(given_elems):
        return False
    if gold_n[0] != given_n[0] or gold_n[-1] != given_n[-1]:
        return False  # bracket check: [1,2) is not (1,2)
    return all(_elements_equal(a, b) for a, b in zip(gold_elems, given_elems))
