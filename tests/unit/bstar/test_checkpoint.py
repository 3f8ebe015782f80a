"""Checkpoints: bit-identical round trip, another mesh, keep last N, damaged files, P_0, non-finite runs."""
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bstar_jax.bstar import checkpoint
from bstar_jax import models
from bstar_jax.train import sft, train_state, trainer
from bstar_jax.core import mesh as mesh_lib
from tiny_sft import CFG, examples, tiny_config


def random_state(mesh, seed=0, config=None):
    """A train state with random values in every leaf (moments, counts, step), placed on `mesh`."""
    abstract = sft.abstract_train_state(CFG, config or tiny_config(), mesh)
    rng = np.random.default_rng(seed)

    def fill(a):
        if jnp.issubdtype(a.dtype, jnp.integer):
            value = rng.integers(0, 1000, size=a.shape).astype(a.dtype)
        else:
            value = rng.normal(size=a.shape).astype(a.dtype)
        return jax.device_put(value, a.sharding)

    return jax.tree.map(fill, abstract)


def assert_same(a, b):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
        assert np.asarray(x).dtype == np.asarray(y).dtype


def damage(folder):
    """Truncates every tensor data file of a saved state to half its size."""
    hit = 0
    for root, _, files in os.walk(os.path.join(folder, "state")):
        if os.path.basename(root) == "d":
            for name in files:
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                hit += 1
    assert hit


def test_save_restore_is_bit_identical(tmp_path):
    mesh = mesh_lib.make_mesh(4, 2, 1)
    state = random_state(mesh)
    metrics = {"sft_loss": np.float32(0.5), "pass_at_k": 0.25, "per_t": np.array([0.1, 0.2])}
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ck:
        assert ck.latest_iteration() is None and ck.restore(sft.abstract_train_state(CFG, tiny_config(), mesh)) is None
        ck.save(3, state, temperature=0.7, threshold=-0.1, metrics=metrics, extra={"variant": "bstar"})
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ck:  # a fresh process would do the same
        assert ck.latest_iteration() == 3
        target = sft.abstract_train_state(CFG, tiny_config(), mesh)
        r = ck.restore(target)
    assert r.iteration == 3 and r.temperature == 0.7 and r.threshold == -0.1
    assert r.metrics == {"sft_loss": 0.5, "pass_at_k": 0.25, "per_t": [0.1, 0.2]} and r.meta["variant"] == "bstar"
    assert isinstance(r.state, train_state.TrainState) and r.meta["step"] == int(state.step)
    assert_same(r.state, state)
    assert r.state.params["layers"]["q"].sharding == target.params["layers"]["q"].sharding


def test_restore_onto_a_different_mesh(tmp_path):
    saved = random_state(mesh_lib.make_mesh(4, 2, 1), seed=1)
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(1, saved)
        other = mesh_lib.make_mesh(2, 1, 4)
        target = sft.abstract_train_state(CFG, tiny_config(), other)
        r = ck.restore(target)
    assert_same(r.state, saved)
    q = r.state.params["layers"]["q"]
    assert q.sharding.mesh.shape == other.shape and q.sharding.spec == target.params["layers"]["q"].sharding.spec
    assert "tensor" in str(q.sharding.spec)
    mu_q = r.state.opt_state[1][0].mu["layers"]["q"]
    assert mu_q.sharding.spec == q.sharding.spec  # the Adam moments follow their params


def test_keeps_the_last_n(tmp_path):
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = random_state(mesh)
    with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ck:
        for it in range(1, 5):
            ck.save(it, state, metrics={"iteration": it})
        ck.wait()
        assert ck.iterations() == [3, 4] and ck.latest_iteration() == 4


def test_a_full_disk_is_one_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = random_state(mesh)
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    with checkpoint.Checkpointer(tmp_path, max_to_keep=1) as ck:
        ck.save(1, state)
        ck.wait()
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage._replace(free=size // 2))
        with pytest.raises(checkpoint.CheckpointError) as raised:
            ck.save(2, state)
        message = str(raised.value)
        assert "\n" not in message and str(tmp_path) in message and "iteration 2" in message
        assert "resumes after iteration 1" in message
        assert ck.iterations() == [1]
        assert not [name for name in os.listdir(tmp_path) if "tmp" in name]  # nothing half-written
        monkeypatch.undo()
        assert_same(ck.restore(sft.abstract_train_state(CFG, tiny_config(), mesh)).state, state)


# A failed tensorstore read leaves an asyncio callback behind that fires after orbax's loop closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    mesh = mesh_lib.make_mesh(4, 2, 1)
    first, second = random_state(mesh, seed=1), random_state(mesh, seed=2)
    target = sft.abstract_train_state(CFG, tiny_config(), mesh)
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(1, first, temperature=0.5)
        ck.save(2, second, temperature=0.8)
    damage(tmp_path / "2")
    with checkpoint.Checkpointer(tmp_path) as ck:
        with caplog.at_level(logging.WARNING, logger="bstar_jax.bstar.checkpoint"):
            r = ck.restore(target)
        assert r.iteration == 1 and r.temperature == 0.5
        assert_same(r.state, first)
        assert any(f"{tmp_path / '2'} is unreadable" in m and "falling back" in m for m in caplog.messages)
        with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
            ck.restore(target, iteration=2)
        # Resuming from 1 and saving 2 again replaces the damaged one.
        ck.save(2, second, temperature=0.9)
        ck.wait()
        r = ck.restore(target)
        assert r.iteration == 2 and r.temperature == 0.9
        assert_same(r.state, second)


def test_altered_contents_are_caught_by_the_fingerprint(tmp_path, caplog):
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    first, second = random_state(mesh, seed=1), random_state(mesh, seed=2)
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(1, first)
        ck.save(2, second)
    meta_file = tmp_path / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    key = next(k for k in meta["fingerprint"] if "'q'" in k)
    meta["fingerprint"][key] ^= 1  # as if one bit of q had flipped on disk
    meta_file.write_text(json.dumps(meta))
    with checkpoint.Checkpointer(tmp_path) as ck, caplog.at_level(logging.WARNING):
        r = ck.restore(sft.abstract_train_state(CFG, tiny_config(), mesh))
    assert r.iteration == 1 and any("fingerprint" in m for m in caplog.messages)


def test_non_finite_loss_leaves_the_last_checkpoint_intact(tmp_path):
    c = tiny_config()
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    good = sft.init_train_state(CFG, models.init(CFG, 0), c, mesh)
    expected = jax.device_get(good)
    bad_params = models.init(CFG, 0)
    bad_params["layers"]["up"] = bad_params["layers"]["up"] * jnp.nan
    with checkpoint.Checkpointer(tmp_path) as ck:
        ck.save(1, good)
        state = sft.init_train_state(CFG, bad_params, c, mesh)
        with pytest.raises(trainer.NonFiniteError):
            state, metrics = sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=2)
            ck.save(2, state, metrics=metrics)  # never reached
        assert ck.latest_iteration() == 1
        r = ck.restore(sft.abstract_train_state(CFG, c, mesh))
    assert r.iteration == 1
    assert_same(r.state, expected)
