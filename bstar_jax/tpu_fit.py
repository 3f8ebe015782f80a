"""`python -m bstar_jax.tpu_fit --config=... --topology=...`: the fit tool's command (bstar_jax/cli/fit.py)."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bstar_jax.cli.fit", run_name="__main__", alter_sys=True)
