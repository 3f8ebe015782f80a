"""Moved to `bstar_jax.rollout`; this alias stays only until prm_phase imports rollout.sample."""
from bstar_jax.rollout import sample  # noqa: F401
