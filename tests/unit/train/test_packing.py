"""Packed rows (several examples per row, segment ids): attention stays within an example,
positions restart, and the SFT and PRM losses and gradients equal those of padded rows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bstar_jax.config import schema
from bstar_jax.train import batching, sft, trainer
from bstar_jax import models
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards import prm_train

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-5)


def sft_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        prompt = rng.integers(2, 64, size=int(rng.integers(1, 8)))
        target = np.append(rng.integers(2, 64, size=int(rng.integers(1, 12))), 1)
        ids, n_prompt = batching.encode_example(prompt, target, max_len=64)
        rows.append(batching.sft_row(ids, n_prompt))
    return rows


@pytest.mark.parametrize("window", [0, 5])
def test_attention_never_crosses_segments(window):
    cfg = CFG.replace(sliding_window=window)
    params = models.init(cfg, 0)
    lengths = [7, 11, 9]
    rng = np.random.default_rng(1)
    seqs = [rng.integers(2, 64, size=n).astype(np.int32) for n in lengths]
    L = 32
    tokens = np.zeros((1, L), np.int32)
    tokens[0, :sum(lengths)] = np.concatenate(seqs)
    seg = np.zeros((1, L), np.int32)
    pos = np.zeros((1, L), np.int32)
    starts = np.cumsum([0] + lengths)
    for s, (a, b) in enumerate(zip(starts[:-1], starts[1:]), start=1):
        seg[0, a:b], pos[0, a:b] = s, np.arange(b - a)

    def packed_logits(tok):
        hidden, _ = models.hidden_states(cfg, params, jnp.asarray(tok), jnp.asarray(pos), segment_ids_BxL=jnp.asarray(seg))
        return np.asarray(models.logits(cfg, params, hidden))[0]

    packed = packed_logits(tokens)
    for s, (a, b) in enumerate(zip(starts[:-1], starts[1:])):  # each segment = that sequence alone
        alone = np.asarray(models.forward(cfg, params, jnp.asarray(seqs[s])[None]))[0]
        np.testing.assert_allclose(packed[a:b], alone, atol=1e-5, rtol=1e-5)
    perturbed = tokens.copy()
    perturbed[0, starts[1]:starts[2]] = (perturbed[0, starts[1]:starts[2]] + 7) % 60 + 2
    changed = packed_logits(perturbed)
    for a, b in ((starts[0], starts[1]), (starts[2], starts[3])):
        np.testing.assert_array_equal(changed[a:b], packed[a:b])
    assert not np.allclose(changed[starts[1]:starts[2]], packed[starts[1]:starts[2]])


def test_pack_step_layout_keeps_micro_batches_and_groups():
    rows = sft_rows(32, seed=2)
    accum, groups, multiple = 2, 2, 4
    batch = batching.pack_step(rows, max_len=64, pack_len=48, accum=accum, groups=groups, row_multiple=multiple)
    B, L = batch["tokens"].shape
    padded = batching.pad_rows(rows, max_len=64)
    assert L <= 48 and B % (accum * multiple) == 0 and B * L < padded["tokens"].size
    assert batch["segment_ids"].max() > 1  # some row holds several examples
    per_group = 32 // accum // groups
    for i in range(accum):
        mb = {k: v[i::accum] for k, v in batch.items()}
        R = mb["tokens"].shape[0] // groups
        for j in range(groups):
            want = sorted(tuple(rows[k * accum + i]["tokens"]) for k in range(j * per_group, (j + 1) * per_group))
            got = []
            for r in range(j * R, (j + 1) * R):
                seg, pos = mb["segment_ids"][r], mb["positions"][r]
                assert mb["lengths"][r] == (seg > 0).sum() and (seg[mb["lengths"][r]:] == 0).all()
                for s in range(1, seg.max() + 1):
                    at = np.flatnonzero(seg == s)
                    assert (np.diff(at) == 1).all() and (pos[at] == np.arange(at.size)).all()
                    got.append(tuple(mb["tokens"][r, at]))
                    assert mb["loss_mask"][r, at[0]] == 0
            assert sorted(got) == want
    # the same target tokens are counted (position 0 of a padded row predicts nothing either)
    assert batch["loss_mask"].sum() == padded["loss_mask"][:, 1:].sum()


def _accumulated(loss_fn, params, batch, accum):
    """The trainer's objective: mean over micro-batches (rows i, i + accum, ...) of loss_fn."""
    def total(p):
        return sum(loss_fn(p, {k: v[i::accum] for k, v in batch.items()}) for i in range(accum)) / accum
    return jax.jit(jax.value_and_grad(total))(params)


def _assert_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


@pytest.mark.parametrize("accum,groups", [(1, 1), (2, 2)])
def test_packed_sft_loss_and_gradients_equal_padded(accum, groups):
    params = models.init(CFG, 0)
    rows = sft_rows(16, seed=3)
    padded = {k: jnp.asarray(v) for k, v in batching.pad_rows(rows, max_len=64).items()}
    packed = {k: jnp.asarray(v) for k, v in
              batching.pack_step(rows, max_len=64, pack_len=64, accum=accum, groups=groups).items()}
    assert packed["tokens"].shape[0] < padded["tokens"].shape[0]
    loss_fn = lambda p, mb: sft.sft_loss(p, mb, cfg=CFG, groups=groups)
    loss_a, grads_a = _accumulated(loss_fn, params, padded, accum)
    loss_b, grads_b = _accumulated(loss_fn, params, packed, accum)
    np.testing.assert_allclose(float(loss_a), float(loss_b), atol=1e-5, rtol=1e-5)
    _assert_close(grads_a, grads_b)


def test_run_sft_packed_equals_padded():
    c = schema.section("sft")
    c.update(dict(lr=1e-2, min_lr=1e-3, warmup_steps=0, decay_steps=10, batch_size=16, micro_batch_size=8,
                  loss_groups=2, max_len=64, max_prompt_len=32, max_target_len=32, compute_dtype="float32",
                  freeze_embeddings=False, freeze_lm_head=False, freeze_norms=False))
    mesh = mesh_lib.make_mesh(-1, 1, 1)  # 8 fake devices: packed rows are a multiple of 8 per micro-batch
    rng = np.random.default_rng(4)
    examples = [(rng.integers(2, 64, size=int(rng.integers(1, 8))).tolist(),
                 rng.integers(2, 64, size=int(rng.integers(1, 12))).tolist() + [1]) for _ in range(40)]
    params = models.init(CFG, 0)
    out = {}
    for pack in (False, True):
        c.pack = pack
        state = sft.init_train_state(CFG, params, c, mesh)
        state, stats = sft.run_sft(state, examples, CFG, c, mesh, jax.random.key(0), num_steps=2)
        out[pack] = (stats, jax.device_get(state.params))
    assert out[False][0]["target_tokens"] == out[True][0]["target_tokens"]
    np.testing.assert_allclose(out[True][0]["loss"], out[False][0]["loss"], atol=1e-5)
    _assert_close(out[True][1], out[False][1], atol=1e-4)


def test_packed_prm_bce_and_gradients_equal_padded():
    prm_params = prm_lib.init_prm(CFG, models.init(CFG, 0))
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(12):
        n, n_prompt = int(rng.integers(4, 20)), int(rng.integers(1, 4))
        weights = (np.arange(n) >= n_prompt).astype(np.float32)
        rows.append(prm_train.prm_row((rng.integers(2, 64, size=n).astype(np.int32),
                                       (rng.random(n) < 0.5).astype(np.float32) * weights, weights)))
    padded = {k: jnp.asarray(v) for k, v in batching.pad_rows(rows, max_len=64).items()}
    packed = {k: jnp.asarray(v) for k, v in batching.pack_step(rows, max_len=64, pack_len=64).items()}
    assert packed["tokens"].shape[0] < padded["tokens"].shape[0]
    loss_fn = lambda p, b: prm_train.prm_loss(CFG, p, b)
    loss_a, grads_a = _accumulated(loss_fn, prm_params, padded, 1)
    loss_b, grads_b = _accumulated(loss_fn, prm_params, packed, 1)
    np.testing.assert_allclose(float(loss_a), float(loss_b), atol=1e-5, rtol=1e-5)
    _assert_close(grads_a, grads_b)
