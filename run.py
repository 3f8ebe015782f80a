"""B-STaR self-improvement: `python run.py --config=configs/gsm8k.py [--config.x=y ...]`.

A doorway only: parse the config, start multi-host JAX when there are several processes, build
the mesh, and hand over to `bstar_jax.loop.run`.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file (optionally :tiny).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from bstar_jax import loop, mesh

    mesh.initialize_distributed()
    config = _CONFIG.value
    device_mesh = mesh.mesh_from_config(config.mesh)
    logging.info("mesh %s over %d device(s)", dict(device_mesh.shape), device_mesh.size)
    loop.run(config, device_mesh, command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))


if __name__ == "__main__":
    app.run(main)
