"""B-STaR self-improvement: `python run.py --config=configs/gsm8k.py [--config.x=y ...] [--verbose]`.

A doorway only: parse the config, start multi-host JAX when there are several processes, build
the mesh, and hand over to `bstar_jax.bstar.experiment.run`. `bstar_jax.cli.main` turns a user error into one line
and exit status 2, Ctrl-C into exit status 130, SIGTERM into a stop at the next safe point and exit
status 143 (docs/errors.md).
"""
import os
import sys

from absl import flags
from ml_collections import config_flags

from bstar_jax.cli import main as cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file (optionally :tiny).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from bstar_jax.config import check as config_check
    from bstar_jax.bstar import experiment as loop
    from bstar_jax.core import mesh, preemption

    config = _CONFIG.value
    mesh.initialize_distributed()
    preemption.install()  # SIGTERM: stop at the next safe point, save, exit 143 (docs/errors.md#preemption)
    config_check.validate_mesh_config(config.mesh)
    device_mesh = mesh.mesh_from_config(config.mesh)
    report_path = loop.run(config, device_mesh, command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    if report_path:  # the writer process: the answer on screen
        from bstar_jax.analysis import summary

        print("\n" + summary.for_config(config), flush=True)


if __name__ == "__main__":
    cli.run(main)
