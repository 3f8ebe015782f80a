"""The self-improvement variants, how each picks its (T, τ), and what each carries from one
iteration's training to the next (docs/training.md, "Variants"; docs/algorithm.md#variants).

(T, τ) per iteration:
  bstar                   searches T and τ on the dev subset (Algorithm 1, step 1); on the
                          code and ARC tasks T only, τ at baseline.threshold (TEMPERATURE_ONLY_TASKS);
  bstar_temperature_only  searches T, τ fixed at baseline.threshold (Table 3, "temperature only");
  bstar_threshold_only    searches τ, T fixed at baseline.temperature (Table 3, "threshold only");
  online_rft_fixed        one fixed (T, τ) from config.fixed, e.g. B-STaR's last choice (Table 6);
  the others              baseline.temperature and baseline.threshold.

Carried over:
  bstar*, online_rft*  keep params, optimizer state (Adam moments) and LR-schedule position;
  iterative_rft        keeps params, fresh optimizer (the schedule restarts);
  rest_em              restarts from P_0 with a fresh optimizer.

The run's step counter carries on in every case. New variants go at the end of VARIANTS: a run's
random streams are numbered by its position there (loop.run_index).
Run names (`<variant>[-r<k>][+prm]`) are config/choices.py's `run_name`.
"""
from __future__ import annotations

from bstar_jax.train import sft
from bstar_jax.train.train_state import TrainState

from bstar_jax.config.choices import FIXED, SEARCHED, TEMPERATURE_ONLY_TASKS, VARIANTS  # noqa: F401  (re-exported)


def check_variant(variant: str) -> None:
    """Raises ValueError naming the known variants unless `variant` is one."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def searches(variant: str, knob: str, task: str = "") -> bool:
    """Whether `variant` searches `knob` ("temperature" or "threshold") each iteration on `task`
    (on a TEMPERATURE_ONLY_TASKS task the threshold is never searched)."""
    check_variant(variant)
    if knob == "threshold" and task in TEMPERATURE_ONLY_TASKS:
        return False
    return knob in SEARCHED.get(variant, ())


def carry_over(variant: str, state: TrainState, p0_params, sft_config) -> TrainState:
    """The state the next iteration trains from, by the variant's rule (module docstring)."""
    check_variant(variant)
    if variant == "iterative_rft":
        return sft.reset_optimizer(state, sft_config)
    if variant == "rest_em":
        if p0_params is None:
            raise ValueError("carry_over('rest_em') needs the starting params P_0")
        return sft.reset_optimizer(state, sft_config, params=p0_params)
    return state
