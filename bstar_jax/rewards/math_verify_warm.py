"""Imported only by the fork server of math-verify's worker pool (`math_verify_pool.PRELOAD`).

Runs one comparison at import, so that math-verify's LaTeX parser and compiled patterns are built
once in the server and every worker forked from it starts with them (the first parse in a fresh
process takes ~0.3 s, more than many pairs take to grade).
"""
from bstar_jax.rewards.math_verify_pool import equivalent

try:
    equivalent(("\\frac{1}{2}", "0.5"))
    equivalent(("(1, 2]", "\\{1, 2\\}"))
except Exception:  # noqa: BLE001  a failed warm-up must not stop the server: workers then warm up themselves
    pass
