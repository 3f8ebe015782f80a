"""bstar-jax: B-STaR self-improvement (Zeng et al., ICLR 2025) in JAX."""
