"""bstar-jax: B-STaR self-improvement (Zeng et al., ICLR 2025) in JAX.

The folders are the layers, ground floor first: core, models, text, data, generate, train,
rewards, config, analysis, bstar (the algorithm), cli. The public surface keeps its short names:

    from bstar_jax import models, sampling, rewards, metrics, balance

(`sampling` is bstar_jax.generate.sampling, `metrics` and `balance` live in bstar_jax.bstar);
they are imported on first use, so `import bstar_jax` alone costs no JAX import.
"""
import importlib

_PUBLIC = {"models": "bstar_jax.models", "sampling": "bstar_jax.generate.sampling", "rewards": "bstar_jax.rewards",
           "metrics": "bstar_jax.bstar.metrics", "balance": "bstar_jax.bstar.balance"}


def __getattr__(name):
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bstar_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
