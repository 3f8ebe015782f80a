"""The paper's findings on the demo task, in one workdir and one report (docs/results.md#reproducing-the-papers-findings).

The demo's synthetic shopping task, tiny model and warm start P_0 (configs/demo.py), then from the
same P_0, each with the answer-only reward and with answer+PRM (Table 1's w/o and w/ RM):

  bstar                   searches (T, τ) every iteration           (a) exploration, (b) chosen (T, τ)
  bstar_temperature_only  searches T, τ = baseline.threshold        (c) Table 3
  bstar_threshold_only    searches τ, T = baseline.temperature      (c) Table 3
  online_rft              T = 1.0, τ = 0.0 every iteration           (a), Tables 1, 3, 6
  online_rft_fixed        B-STaR's last (T, τ), held fixed           (d) Table 6
  iterative_rft, rest_em  the other baselines                       Table 1

14 runs of 4 iterations, as the demo. The runs go in this order so that online_rft_fixed finds
bstar's last choice (config.fixed.from_run). Wall time alone on a 2-core CPU with two CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): about 40 min for both rewards (seed 0:
answer+PRM half 23 min with the warm start and the PRM, answer-only half 16 min;
docs/results.md). `iterations` may grow on a rerun of the workdir.

    python run.py --config=configs/reproduce.py
    python -m bstar_jax.report runs/reproduce          # per-iteration tables and paired differences
    python run.py --config=configs/reproduce.py:tiny   # every run at tiny sizes, 2 iterations (tests)
"""
from configs import demo

VARIANTS = ("bstar", "bstar_temperature_only", "bstar_threshold_only", "online_rft", "online_rft_fixed",
            "iterative_rft", "rest_em")


def get_config(arg: str | None = None):
    c = demo.get_config(arg)  # the demo's task, model, P_0 and sizes (tiny ones for `:tiny`)
    c.workdir = "runs/reproduce_tiny" if arg == "tiny" else "runs/reproduce"
    c.variants = VARIANTS
    c.use_prm = (False, True)
    c.fixed.from_run = "bstar"  # Table 6: B-STaR's final (T, τ), same reward, held fixed
    return c
