"""The self-improvement variants and what each carries from one iteration's training to the next
(docs/training.md, "Variants"):

  bstar, online_rft  keep params, optimizer state (Adam moments) and LR-schedule position;
  iterative_rft      keeps params, fresh optimizer (the schedule restarts);
  rest_em            restarts from P_0 with a fresh optimizer.

The run's step counter carries on in every case.
"""
from __future__ import annotations

from bstar_jax import sft
from bstar_jax.trainer import TrainState

VARIANTS = ("bstar", "online_rft", "iterative_rft", "rest_em")


def check_variant(variant: str) -> None:
    """Raises ValueError naming the known variants unless `variant` is one."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def carry_over(variant: str, state: TrainState, p0_params, sft_config) -> TrainState:
    """The state the next iteration trains from, by the variant's rule (module docstring)."""
    check_variant(variant)
    if variant in ("bstar", "online_rft"):
        return state
    if variant == "iterative_rft":
        return sft.reset_optimizer(state, sft_config)
    if p0_params is None:
        raise ValueError("carry_over('rest_em') needs the starting params P_0")
    return sft.reset_optimizer(state, sft_config, params=p0_params)
