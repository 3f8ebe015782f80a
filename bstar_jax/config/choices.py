"""The values that some config fields choose from. The code behind each choice lives above this
layer (bstar_jax/bstar/variants.py, bstar_jax/bstar/balance.py); validation and the offline report
only need the names.

A run's name is `<variant>[-r<k>][+prm]`: `-r<k>` marks replicate k >= 1 (config.replicate: the
same run with independent training draws, docs/results.md#replicates), `+prm` the answer+PRM
reward. `-` rather than `#`: run names are folder names, and `#` starts a URL fragment in gs://.
config.primary names one comparison of two runs, "a - b".
"""
import re

# config.variants: the loop's variants (docs/training.md, "Variants"). New variants go at the end:
# a run's random streams are numbered by its position here.
VARIANTS = ("bstar", "online_rft", "iterative_rft", "rest_em",
            "bstar_temperature_only", "bstar_threshold_only", "online_rft_fixed")
# What each searching variant searches on the dev subset; the other knob stays at the baseline's.
SEARCHED = {"bstar": ("temperature", "threshold"), "bstar_temperature_only": ("temperature",),
            "bstar_threshold_only": ("threshold",)}
# Tasks whose searching variants search T alone, τ held at baseline.threshold: the paper ran APPS
# and ARC-Challenge with a binary reward (unit tests, the answer) and no reward model, and searched
# the temperature only there.
TEMPERATURE_ONLY_TASKS = ("code", "arc")
FIXED = "online_rft_fixed"  # the variant whose (T, τ) comes from config.fixed
# The fixed-configuration baselines: baseline.temperature every iteration, and a held τ (with the
# PRM, baseline.prm_threshold: fitted once, or a given number).
BASELINES = ("online_rft", "iterative_rft", "rest_em")
# config.baseline.prm_threshold's rule "fitted": at iteration 1 the τ of search.thresholds with the
# best balance score on the dev subset at baseline.temperature, held from then on.
FITTED = "fitted"
_RUN_NAME = re.compile(r"^(?P<variant>.+?)(?:-r(?P<replicate>[1-9][0-9]*))?(?P<prm>\+prm)?$")

# config.search.mode: "paper" searches (T, τ) on the dev subset (Algorithm 1); "official" searches
# T on the dev subset and τ on the iteration's pool (docs/algorithm.md).
SEARCH_MODES = ("paper", "official")


def fits_threshold(config, variant: str, use_prm: bool) -> bool:
    """Whether the run (variant, use_prm) fits its τ at iteration 1 (a baseline with the PRM
    under baseline.prm_threshold = "fitted"); answer-only runs never do: there every τ in [0, 1)
    selects the same responses."""
    return bool(use_prm) and variant in BASELINES and config.baseline.prm_threshold == FITTED


def run_name(variant: str, use_prm: bool, replicate: int = 0) -> str:
    """The run's name in metrics, the report and the workdir's folders: "bstar", "bstar+prm",
    "online_rft-r1", "online_rft-r1+prm", ..."""
    return f"{variant}{f'-r{int(replicate)}' if replicate else ''}{'+prm' if use_prm else ''}"


def parse_run_name(name: str) -> tuple[str, bool, int]:
    """(variant, use_prm, replicate) of a run name (`run_name`'s inverse); raises ValueError
    naming the known variants when the variant is not one. "P_0" / "P_0+prm" parse as variant "P_0"."""
    m = _RUN_NAME.match(name)
    variant = m.group("variant") if m else name
    if variant != "P_0" and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant, bool(m.group("prm")), int(m.group("replicate") or 0)


def parse_primary(text: str) -> tuple[str, str] | None:
    """(a, b) of a primary comparison "a - b" (run names or P_0[+prm]); None for "". Raises
    ValueError saying what is wrong."""
    if not text.strip():
        return None
    sides = [s.strip() for s in text.split(" - ")]
    if len(sides) != 2 or not all(sides):
        raise ValueError('must be "<run> - <run>", e.g. "bstar - online_rft", or "" for none')
    parsed = [parse_run_name(s) for s in sides]  # ValueError naming the known variants
    if any(r for _, _, r in parsed):
        raise ValueError("names a replicate run; the primary compares the runs themselves (replicate 0)")
    if sides[0] == sides[1] or parsed[0][1] != parsed[1][1]:
        raise ValueError("must compare two different runs of one reward (both with +prm or neither)")
    return sides[0], sides[1]
