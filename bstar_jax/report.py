"""`python -m bstar_jax.report <workdir>...`: the offline report's command (bstar_jax/analysis/report.py)."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bstar_jax.analysis.report", run_name="__main__", alter_sys=True)
