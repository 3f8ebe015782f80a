"""The τ a fixed-configuration baseline holds: online RFT, iterative RFT, ReST-EM
(docs/algorithm.md#fitted-threshold).

Answer-only runs hold baseline.threshold (there every τ in [0, 1) selects the same responses).
With the PRM, baseline.prm_threshold decides: a number is held as given (the paper's τ = 0);
"fitted", the default, chooses τ once, at the run's first iteration, by B-STaR's own dev search
restricted to the baseline's temperature: the dev subset sampled at baseline.temperature, the
balance score of every τ of search.thresholds (`balance.search` with that one temperature), and
the best τ held for every later iteration (a fit whose every τ scores 0, with no correct dev
response, is repeated at the next iteration). The paper's τ = 0 was set for the paper's PRM; a PRM
of another calibration can put most correct responses at or below 0, and a baseline held there
trains on a handful of responses instead of what its fixed configuration is meant to select.

The fitted τ survives a restart: the fitting iteration keeps its search phase (bstar/phases.py)
until its checkpoint, whose meta then holds the τ (`checkpoint_meta`, `restore`).
"""
from __future__ import annotations

from bstar_jax.config import choices

KEY = "fitted_threshold"  # in the checkpoint's meta and in every metrics row of a fitting run


class HeldThreshold:
    """One run's held τ: fixed from the start, or fitted once (`fits`) and then held."""

    def __init__(self, config, variant: str, use_prm: bool):
        self.fits = choices.fits_threshold(config, variant, use_prm)
        self.value: float | None = None
        if use_prm and variant in choices.BASELINES and not self.fits:
            self.value = float(config.baseline.prm_threshold)
        elif not self.fits:
            self.value = float(config.baseline.threshold)

    @property
    def needs_fit(self) -> bool:
        """Whether this iteration fits τ (a fitting run that has no τ yet)."""
        return self.fits and self.value is None

    def keep(self, threshold: float, balance_score: float | None) -> None:
        """Holds the τ the fitting iteration chose (its search phase's, also when read back). A
        fit whose every τ scored 0 (no correct dev response at that T) tells nothing: that
        iteration uses its pick, as B-STaR's search would, and the next one fits again."""
        if self.needs_fit and balance_score is not None and balance_score > 0:
            self.value = float(threshold)

    def restore(self, meta: dict) -> None:
        """The fitted τ from a checkpoint's meta (none there: iteration 0, so not fitted yet)."""
        if self.fits and meta.get(KEY) is not None:
            self.value = float(meta[KEY])

    def checkpoint_meta(self) -> dict:
        """What a checkpoint keeps of it: the fitted τ once there is one."""
        return {KEY: self.value} if self.fits and self.value is not None else {}

    def row(self) -> dict:
        """The metrics-row field of a fitting run: the fitted τ (None before the fit)."""
        return {KEY: self.value} if self.fits else {}

