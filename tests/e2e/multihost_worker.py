"""One process of the multi-process tests (tests/e2e/test_multihost.py), and the computation they compare.

`compute(mesh)` runs each part that touches sharded arrays on a (data=2, fsdp=2) mesh and
returns numpy results: the sampler, the pool metrics, the selection and the (T, τ) search, one
SFT step and one PRM step. The test calls it in its own process on 4 of its 8 fake devices (the
reference) and, through this script, in 2 processes of 2 fake CPU devices each:

    python tests/e2e/multihost_worker.py compute OUT.npz     # every process writes OUT.<pid>.npz
    python tests/e2e/multihost_worker.py wait                # prints "ready", then collectives forever
    python tests/e2e/multihost_worker.py decide OUT.json     # decisions: every process writes OUT.<pid>.json

The launch comes from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, as a user's.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

SEED = 1234


def tiny_model():
    from bstar_jax import models

    cfg = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                             num_kv_heads=2, head_dim=8, max_position_embeddings=64, eos_token_id=3,
                             pad_token_id=0)
    # numpy draws, not `models.init`: building the NNX module costs seconds on a busy CPU.
    rng = np.random.default_rng(SEED)
    params = jax.tree_util.tree_map_with_path(
        lambda path, s: (np.ones(s.shape, s.dtype) if "norm" in str(path[-1])
                         else (0.1 * rng.standard_normal(s.shape)).astype(s.dtype)), models.param_shapes(cfg))
    return cfg, params


def _sampler(cfg, params, mesh, key) -> dict:
    from bstar_jax.core import distributed
    from bstar_jax.generate import sampling

    rng = np.random.default_rng(SEED)
    B, P = 6, 5  # 6 rows: padded to the bucket of 8, split over 4 devices
    prompts = rng.integers(4, cfg.vocab_size, (B, P)).astype(np.int32)
    lengths = np.array([5, 3, 4, 1, 5, 2], np.int32)
    temperature = np.array([0.0, 0.7, 1.0, 1.3, 0.7, 1.0], np.float32)
    out = sampling.generate(cfg, params, prompts, lengths, jax.random.fold_in(key, 1), max_new_tokens=8,
                            temperature=temperature, top_p=0.95, eos_id=3, mesh=mesh)
    out = distributed.to_host(out)
    return {"sample_tokens": out.tokens, "sample_lengths": out.lengths, "sample_logprobs": out.logprobs}


def _pools(mesh) -> dict:
    from bstar_jax.bstar import balance, metrics

    rng = np.random.default_rng(SEED + 1)
    T, Q, K = 2, 6, 8  # 6 queries: padded to 8 for the data axes
    correct = rng.random((T, Q, K)) < 0.5
    reward = np.round(rng.random((T, Q, K)) * 2 - 0.5, 2).astype(np.float32)
    valid = rng.random((T, Q, K)) < 0.9
    text_id = rng.integers(0, 5, (T, Q, K)).astype(np.int32)
    selected = balance.select(reward[0], valid[0], 0.2, 10, text_id[0], mesh=mesh)
    found = balance.search(correct, reward, valid, text_id, [0.7, 1.0], [0.0, 0.3, 0.6], target_size=10,
                           n_star=2, mesh=mesh)
    return {"pass_at_k_s": metrics.pass_at_k_s(correct[0], text_id[0], 2, mesh=mesh),
            "balance_score": np.float64(metrics.balance_score(correct[0], selected, text_id[0], 2, mesh=mesh)),
            "selected": selected, "search_table": found.balance_score_TxU,
            "search_choice": np.array([found.temperature, found.threshold])}


def _sft_step(cfg, params, mesh, key) -> dict:
    from bstar_jax.config import schema
    from bstar_jax.train import batching, sft
    from bstar_jax.core import distributed

    c = schema.section("sft")
    c.update(dict(lr=1e-2, warmup_steps=0, decay_steps=10, batch_size=8, micro_batch_size=8, max_len=32,
                  max_prompt_len=16, max_target_len=16, compute_dtype="", freeze_norms=False))
    rng = np.random.default_rng(SEED + 2)
    examples = [(rng.integers(4, 64, rng.integers(2, 8)).tolist(), rng.integers(4, 64, rng.integers(2, 10)).tolist())
                for _ in range(12)]
    state = sft.init_train_state(cfg, params, c, mesh)
    step = sft.make_train_step(cfg, c, mesh)
    batch = next(batching.iterate_batches(examples, c.batch_size, jax.random.fold_in(key, 2), max_len=c.max_len,
                                          max_prompt_len=c.max_prompt_len, max_target_len=c.max_target_len,
                                          mesh=mesh))
    state, m = step(state, sft.device_batch(batch, mesh))
    new = distributed.to_host(state.params)
    return {"sft_loss": distributed.to_host(m["loss"]), "sft_grad_norm": distributed.to_host(m["grad_norm"]),
            "sft_q0": new["layers"]["q"], "sft_down": new["layers"]["down"]}


def _prm_step(cfg, params, mesh) -> dict:
    from bstar_jax.core import distributed
    from bstar_jax.train import train_state, trainer
    from bstar_jax.config import plan, schema
    from bstar_jax.rewards import prm, prm_train

    prm_params = prm.init_prm(cfg, params)
    config = schema.defaults()
    config.prm.update(dict(steps=4, batch_size=8, micro_batch_size=8, lr=1e-2, min_lr=1e-3))
    spec = prm_train.train_spec(plan.train_config(config, "prm"))
    mask = prm_train.trainable_mask(prm_params)
    state = train_state.init_state(prm_params, mask, spec, prm.prm_shardings(cfg, mesh), mesh)
    step = prm_train.make_step(cfg, mask, spec, train_state.shardings_of(state), mesh)
    rng = np.random.default_rng(SEED + 3)
    batch = {"tokens": rng.integers(4, 64, (8, 16)).astype(np.int32),
             "targets": (rng.random((8, 16)) < 0.5).astype(np.float32),
             "weights": (rng.random((8, 16)) < 0.3).astype(np.float32),
             "positions": np.tile(np.arange(16, dtype=np.int32), (8, 1)), "lengths": np.full(8, 16, np.int32),
             "segment_ids": np.ones((8, 16), np.int32)}
    state, metrics = step(state, trainer.device_batch(batch, mesh))
    loss = metrics["loss"]
    return {"prm_loss": distributed.to_host(loss), "prm_head_w": distributed.to_host(state.params["head"]["w"]),
            "prm_q0": distributed.to_host(state.params["backbone"]["layers"]["q"])}


def compute(mesh) -> dict:
    """Every result the multi-process test compares, as numpy arrays (whole on every process)."""
    cfg, params = tiny_model()
    key = jax.random.key(SEED)  # the same root key in every process, as in a run
    out = {"key_data": np.asarray(jax.random.key_data(jax.random.fold_in(key, 7)))}
    out.update(_sampler(cfg, params, mesh, key))
    out.update(_pools(mesh))
    out.update(_sft_step(cfg, params, mesh, key))
    out.update(_prm_step(cfg, params, mesh))
    return out


def decide(folder: str) -> dict:
    """Decisions taken on the writer and gathered ones, as each process sees them. Process 0
    creates a file between two readings of it: a process deciding for itself could see either."""
    import pathlib

    from bstar_jax.core import distributed
    from bstar_jax.core.errors import UserError

    marker = pathlib.Path(folder) / "marker"

    @distributed.decided_on_writer
    def present() -> bool:
        return marker.exists()

    @distributed.decided_on_writer
    def whose() -> int:
        return jax.process_index()

    @distributed.gathered
    def each() -> int:
        return 10 + jax.process_index()

    @distributed.decided_on_writer
    def refuse() -> None:
        raise UserError(f"refused by process {jax.process_index()}")

    @distributed.decided_on_writer
    def left() -> str:
        return "left"

    @distributed.decided_on_writer
    def right() -> str:
        return "right"

    out = {"before": present()}
    if distributed.is_writer():
        marker.write_text("x")
    out["after"] = present()
    distributed.barrier("decide: marker written")
    out["whose"], out["each"] = whose(), each()
    try:
        refuse()
    except UserError as e:
        out["refused"] = f"{type(e).__name__}: {e}"
    try:  # process 0 takes one branch, process 1 the other: the reader notices
        out["branch"] = left() if distributed.is_writer() else right()
    except distributed.DivergedError as e:
        out["branch"] = f"DivergedError: {e}"
    return out


def main(argv):
    from bstar_jax.core import distributed, mesh as mesh_lib

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    distributed.initialize(dead_after_s=float(os.environ.get("BSTAR_TEST_DEAD_AFTER_S", distributed.DEAD_AFTER_S)))
    assert jax.process_count() == int(os.environ["JAX_NUM_PROCESSES"]), jax.process_count()
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=1)
    if argv[1] == "compute":
        out = compute(mesh)
        np.savez(f"{argv[2]}.{jax.process_index()}.npz", **out)
        distributed.barrier("multihost_worker: done")
    elif argv[1] == "decide":
        import json

        out = decide(os.path.dirname(argv[2]))
        with open(f"{argv[2]}.{jax.process_index()}.json", "w") as f:
            json.dump(out, f)
        distributed.barrier("multihost_worker: decided")
    elif argv[1] == "wait":
        print("ready", flush=True)
        x = distributed.put_global(np.arange(8.0), mesh_lib.batch_sharding(mesh, 1))
        while True:
            distributed.to_host(jax.jit(lambda v: v + 1, out_shardings=mesh_lib.batch_sharding(mesh, 1))(x))
            distributed.barrier("multihost_worker: wait")
    else:
        raise SystemExit(f"unknown mode {argv[1]!r}")


if __name__ == "__main__":
    main(sys.argv)
