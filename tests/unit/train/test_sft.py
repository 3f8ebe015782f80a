"""SFT step: loss vs torch, one AdamW step vs torch, overfitting, freezing, sharding, carry-over, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bstar_jax.models.hf import params_from_torch_layout
from bstar_jax.config import schema
from bstar_jax.train import batching, sft, train_state, trainer
from bstar_jax import models
from bstar_jax.bstar import variants
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import UserError
from tiny_sft import CFG, examples, tiny_config


def parity_config(freeze):
    # lr 1e-3: Adam divides tiny gradients (q at init, ~1e-8) by their own size, so reduction-order
    # noise in them moves a weight by up to ~lr * 1e-2.
    return tiny_config(batch_size=16, micro_batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=1, init_lr=3e-4,
                       decay_steps=6, freeze_embeddings=freeze, freeze_lm_head=freeze, freeze_norms=freeze)


def single_mesh():
    return mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


# ------------------------------------------------------------------ the loss

def test_completion_loss_matches_torch_and_masks_prompt_gradient():
    rng = np.random.default_rng(0)
    B, L, V = 4, 12, 64
    logits = rng.normal(size=(B, L, V)).astype(np.float32) * 3
    tokens = rng.integers(0, V, size=(B, L)).astype(np.int32)
    prompt_len = np.array([3, 5, 1, 7])
    lengths = np.array([12, 9, 6, 10])
    pos = np.arange(L)[None]
    loss_mask = ((pos >= prompt_len[:, None]) & (pos < lengths[:, None])).astype(np.int32)

    ours = float(sft.completion_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask)))
    labels = torch.tensor(np.where(loss_mask == 1, tokens, -100)[:, 1:]).long()
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, V), labels.reshape(-1),
                                            ignore_index=-100)
    assert abs(ours - ref.item()) < 1e-5

    # groups=2: the mean of the two half-batches' token means (the official per-GPU mean).
    halves = [torch.nn.functional.cross_entropy(torch.tensor(logits[s, :-1]).reshape(-1, V),
                                                labels[s].reshape(-1), ignore_index=-100).item()
              for s in (slice(0, 2), slice(2, 4))]
    two = float(sft.completion_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask), 2))
    assert abs(two - np.mean(halves)) < 1e-5

    grad = np.asarray(jax.grad(sft.completion_loss)(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask)))
    # Logits at position t predict token t+1: zero gradient wherever t+1 is a prompt token or padding.
    predicts_target = np.zeros((B, L), bool)
    predicts_target[:, :-1] = loss_mask[:, 1:] == 1
    assert np.all(grad[~predicts_target] == 0.0)
    assert np.all(np.abs(grad[predicts_target]).sum(-1) > 0)


# ------------------------------------------------------------------ parity with a torch AdamW step

def torch_model(cfg, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    tc = LlamaConfig(**cfg.to_hf_dict())
    model = LlamaForCausalLM(tc).float()
    model.config._attn_implementation = "eager"
    with torch.no_grad():  # non-trivial norms, so that a norm update would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def torch_to_params(model, cfg):
    """Our params from a transformers Llama (HF names, torch layout)."""
    return params_from_torch_layout(cfg, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("freeze", [True, False], ids=["official-freezing", "all-trainable"])
def test_steps_match_torch_adamw(freeze):
    cfg = CFG
    c = parity_config(freeze)
    model = torch_model(cfg)
    params0 = torch_to_params(model, cfg)
    mesh = single_mesh()
    state = sft.init_train_state(cfg, params0, c, mesh)
    step_fn = sft.make_train_step(cfg, c, mesh)
    schedule = sft.make_schedule(c)

    for name, p in model.named_parameters():
        p.requires_grad_(not (freeze and ("embed" in name or "lm_head" in name or "norm" in name)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.0, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)
    batches = batching.iterate_batches(examples(40, seed=3), 16, jax.random.key(1), max_len=64)
    accum = 2
    for i in range(3):
        batch = next(batches)
        state, metrics = step_fn(state, sft.device_batch(batch, mesh))
        # torch: micro-batch j = rows j, j+accum, ... ; loss = token mean / accum; clip 1.0; AdamW.
        opt.zero_grad()
        total = 0.0
        for j in range(accum):
            tokens = torch.tensor(batch["tokens"][j::accum]).long()
            labels = torch.where(torch.tensor(batch["loss_mask"][j::accum]) == 1, tokens, -100)
            loss = model(input_ids=tokens, labels=labels).loss / accum
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        for g in opt.param_groups:
            g["lr"] = float(schedule(i))
        opt.step()
        assert abs(float(metrics["loss"]) - total) < 1e-5
        assert abs(float(metrics["grad_norm"]) - norm.item()) < 1e-4 * max(1.0, norm.item())
        assert abs(float(metrics["lr"]) - float(schedule(i))) < 1e-6 * float(schedule(i))
    assert float(metrics["lr"]) != float(schedule(0))  # the schedule moved
    ours, ref = host(state.params), torch_to_params(model, cfg)
    moved = 0
    for path, a in jax.tree_util.tree_flatten_with_path(ours)[0]:
        b = ref
        for k in path:
            b = b[k.key]
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=jax.tree_util.keystr(path))
        moved += not np.array_equal(a, _get(params0, path))
    assert moved == (len(jax.tree.leaves(ours)) - (5 if freeze else 0))  # embed, lm_head, 3 norms
    assert int(state.step) == 3 and int(train_state.schedule_count(state.opt_state)) == 3


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


# ------------------------------------------------------------------ training behaviour

def test_loss_decreases_and_frozen_weights_are_bit_identical():
    c = tiny_config()
    params = models.init(CFG, 0)
    # Frozen 0.02-scale embeddings and head cap the logits near +-0.6; widen them so a fit is possible.
    params["embed"], params["lm_head"] = params["embed"] * 50, params["lm_head"] * 50
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = sft.init_train_state(CFG, params, c, mesh)
    step_fn = sft.make_train_step(CFG, c, mesh)
    batches = batching.iterate_batches(examples(8, seed=1), 8, jax.random.key(0), max_len=64)
    losses = []
    for _ in range(25):
        state, m = step_fn(state, sft.device_batch(next(batches), mesh))
        losses.append(float(m["loss"]))
    assert losses[-1] < 1.0 and losses[-1] < 0.1 * losses[0], losses
    after = host(state.params)
    for key in ("embed", "lm_head", "final_norm"):
        assert np.array_equal(after[key], np.asarray(params[key]))
    for key in ("attn_norm", "mlp_norm"):
        assert np.array_equal(after["layers"][key], np.asarray(params["layers"][key]))
    assert not np.array_equal(after["layers"]["q"], np.asarray(params["layers"]["q"]))
    assert after["layers"]["q"].dtype == np.float32


def test_run_sft_bf16_compute_keeps_fp32_master_weights():
    c = tiny_config(compute_dtype="bfloat16", batch_size=8, micro_batch_size=8)
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), models.init(CFG, 1))  # e.g. a bf16 checkpoint
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = sft.init_train_state(CFG, params, c, mesh)
    state, metrics = sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=3)
    assert np.isfinite(metrics["loss"]) and metrics["steps"] == 3 and metrics["tokens"] > metrics["target_tokens"] > 0
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))


def test_sharded_step_equals_single_device():
    c = parity_config(freeze=False)
    params = models.init(CFG, 2)
    data = [next(batching.iterate_batches(examples(32, seed=5), 16, jax.random.key(i), max_len=64))
            for i in range(2)]
    results = {}
    for name, mesh in {"single": single_mesh(), "data4xfsdp2": mesh_lib.make_mesh(4, 2, 1)}.items():
        state = sft.init_train_state(CFG, params, c, mesh)
        step_fn = sft.make_train_step(CFG, c, mesh)
        losses = []
        for batch in data:
            state, m = step_fn(state, sft.device_batch(batch, mesh))
            losses.append(float(m["loss"]))
        results[name] = (host(state.params), host(state.opt_state), losses)
        if name != "single":
            assert state.params["layers"]["q"].sharding.spec == models.param_shardings(CFG, mesh)["layers"]["q"].spec
    ref_params, ref_opt, ref_losses = results.pop("single")
    for params_i, opt_i, losses_i in results.values():
        np.testing.assert_allclose(losses_i, ref_losses, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params_i, ref_params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), opt_i, ref_opt)


def test_carry_over_rules():
    c = tiny_config()
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    p0 = models.init(CFG, 0)
    state = sft.init_train_state(CFG, p0, c, mesh)
    state, _ = sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=2)
    trained = host(state.params)
    mu = lambda s: host(s.opt_state[1][0].mu)

    for variant in ("bstar", "online_rft"):
        assert variants.carry_over(variant, state, p0, c) is state  # params, moments, schedule position kept
    fresh = variants.carry_over("iterative_rft", state, p0, c)
    assert int(train_state.schedule_count(fresh.opt_state)) == 0 and int(fresh.step) == 2
    assert all(np.all(x == 0) for x in jax.tree.leaves(mu(fresh)))
    jax.tree.map(np.testing.assert_array_equal, host(fresh.params), trained)
    restart = variants.carry_over("rest_em", state, p0, c)
    jax.tree.map(np.testing.assert_array_equal, host(restart.params), host(p0))
    assert int(train_state.schedule_count(restart.opt_state)) == 0 and int(restart.step) == 2
    # Training from the carried state must not delete P_0's buffers (the step donates its state).
    sft.run_sft(restart, examples(8), CFG, c, mesh, jax.random.key(1), num_steps=1)
    assert np.isfinite(np.asarray(p0["embed"])).all()
    with pytest.raises(ValueError, match="unknown variant"):
        variants.carry_over("star", state, p0, c)


def test_default_schedule_matches_the_official_one():
    lr = sft.make_schedule(schema.section("sft"))
    assert float(lr(0)) == 0.0 and abs(float(lr(105)) - 4.12e-6) < 1e-12
    # The official schedule: about 4.05e-6 at step 500, 2.7e-6 at 2,000, 4.5e-7 at 4,000; floor 2e-7.
    for step, want in ((500, 4.05e-6), (2000, 2.72e-6), (4000, 4.5e-7), (4750, 2e-7), (6000, 2e-7)):
        assert abs(float(lr(step)) - want) < 0.02 * want, (step, float(lr(step)))


def test_truncation_follows_the_official_code():
    ids, n_prompt = batching.encode_example(list(range(10, 20)), list(range(30, 40)), max_len=12,
                                            max_prompt_len=4, max_target_len=6, truncate=True)
    assert n_prompt == 4 and ids.tolist() == [16, 17, 18, 19, 30, 31, 32, 33, 34, 35]
    ids, n_prompt = batching.encode_example(list(range(10, 20)), list(range(30, 40)), max_len=8,
                                            max_prompt_len=4, max_target_len=6, truncate=True)
    assert ids.tolist() == [16, 17, 18, 19, 30, 31, 32, 33]
    batch = batching.pad_batch([(np.arange(5), 2), (np.arange(17), 3)], max_len=64)
    assert batch["tokens"].shape == (2, 32) and batch["loss_mask"][0].tolist()[:6] == [0, 0, 1, 1, 1, 0]


# ------------------------------------------------------------------ bad input

def test_batch_size_not_divisible_by_data_axis():
    mesh = mesh_lib.make_mesh(4, 2, 1)
    with pytest.raises(batching.BatchError, match=r"batch_size=12 .*data-parallel size 8 \(data=4 x fsdp=2\)"):
        sft.make_train_step(CFG, tiny_config(batch_size=12, micro_batch_size=12), mesh)
    with pytest.raises(ValueError, match="batch_size=16 is not a multiple of micro_batch_size=6"):
        sft.make_train_step(CFG, tiny_config(batch_size=16, micro_batch_size=6), mesh)


def test_sequence_longer_than_allowed():
    too_long = [([5] * 40, [6] * 30 + [1])]
    with pytest.raises(batching.BatchError, match=r"example 0: 40 prompt \+ 31 target tokens = 71 > max_len=64"):
        next(batching.iterate_batches(too_long, 8, jax.random.key(0), max_len=64, truncate=False))
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    c = tiny_config(max_len=128)
    state = sft.init_train_state(CFG, models.init(CFG, 0), c, mesh)
    with pytest.raises(batching.BatchError, match="max_len=128 exceeds the model's max_position_embeddings=64"):
        sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=1)


def test_non_finite_loss_raises_and_skips_the_update():
    c = tiny_config()
    params = models.init(CFG, 0)
    params["layers"]["q"] = params["layers"]["q"].at[0, 0, 0].set(jnp.inf)
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = sft.init_train_state(CFG, params, c, mesh)
    with pytest.raises(trainer.NonFiniteError, match="step 0 of 3: non-finite loss nan"):
        sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=3)
    step_fn = sft.make_train_step(CFG, c, mesh)
    state = sft.init_train_state(CFG, params, c, mesh)
    batch = next(batching.iterate_batches(examples(8), 8, jax.random.key(0), max_len=64))
    new, m = step_fn(state, sft.device_batch(batch, mesh))
    assert not bool(m["finite"]) and int(new.step) == 0
    np.testing.assert_array_equal(np.asarray(new.params["layers"]["k"]), np.asarray(params["layers"]["k"]))


def test_tied_embeddings_need_consistent_freezing():
    tied = CFG.replace(tie_word_embeddings=True)
    with pytest.raises(ValueError, match="tied"):
        sft.init_train_state(tied, models.init(tied, 0), tiny_config(freeze_lm_head=False), mesh_lib.make_mesh(-1, 1, 1))


# ------------------------------------------------------------------ the shared trainer

def _toy_step(loss_fn, lr=0.1):
    mesh = single_mesh()
    spec = train_state.TrainSpec.from_config(schema.section("sft"), lr=lr, min_lr=0.0, warmup_steps=0, decay_steps=10,
                                         batch_size=8, micro_batch_size=4)
    params = {"w": jnp.asarray([0.0, 1.0]), "frozen": jnp.asarray([2.0])}
    mask = {"w": True, "frozen": False}
    repl = mesh_lib.replicated(mesh)
    state = train_state.init_state(params, mask, spec, {"w": repl, "frozen": repl}, mesh)
    step = trainer.make_step(loss_fn, mask, spec, train_state.shardings_of(state), {"x": 2}, mesh)
    batches = iter(lambda: {"x": np.ones((8, 2), np.float32)}, None)
    return state, step, spec, mesh, batches


def test_non_finite_gradient_norm_with_finite_loss_applies_nothing():
    # sqrt(|w|) at w = 0: the loss is finite, its gradient is not.
    state, step, spec, mesh, batches = _toy_step(lambda p, b: jnp.sum(jnp.sqrt(jnp.abs(p["w"]))) * jnp.mean(b["x"]))
    before = host(state)
    new, m = step(state, trainer.device_batch(next(batches), mesh))
    assert np.isfinite(float(m["loss"])) and not np.isfinite(float(m["grad_norm"])) and not bool(m["finite"])
    jax.tree.map(np.testing.assert_array_equal, host(new), before)  # params, moments, count, step
    state, step, spec, mesh, batches = _toy_step(lambda p, b: jnp.sum(jnp.sqrt(jnp.abs(p["w"]))) * jnp.mean(b["x"]))
    with pytest.raises(trainer.NonFiniteError, match=r"toy: step 0 of 3: non-finite gradient norm (nan|inf) \(loss 1 finite\)"):
        trainer.fit(state, step, batches, spec, mesh, 3, what="toy")


def test_trainer_accumulates_and_keeps_frozen_weights_out_of_the_optimizer():
    state, step, spec, mesh, batches = _toy_step(lambda p, b: jnp.sum((p["w"] - p["frozen"]) ** 2) * jnp.mean(b["x"]))
    assert set(state.opt_state[1][0].mu) == {"w"}  # the frozen weight has no moments
    state, summary = trainer.fit(state, step, batches, spec, mesh, 3)
    assert float(state.params["frozen"][0]) == 2.0 and int(state.step) == 3
    assert summary["losses"][0] == pytest.approx(5.0)  # two micro-batches of (4 + 1) / 2


def test_divergence_rules():
    c = tiny_config()
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = sft.init_train_state(CFG, models.init(CFG, 0), c, mesh)
    state, stats = sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0), num_steps=40)
    assert np.isfinite(stats["loss"])  # a normal tiny run, past the loss rule's warm-up: no rule fires
    c = tiny_config(lr=1e6, min_lr=1e5)
    state = sft.init_train_state(CFG, models.init(CFG, 0), c, mesh)
    with pytest.raises(trainer.DivergenceError, match=r"sft: step 0 of 4: weight norm .* > 10 x its start"):
        sft.run_sft(state, examples(8), CFG, c, mesh, jax.random.key(0))
    assert issubclass(trainer.DivergenceError, UserError) and issubclass(trainer.NonFiniteError, UserError)
    # The loss rule on its own: a spike to 5x the running median (and 1 nat above it) after warm-up.
    monitor = trainer.Monitor(train_state.TrainSpec.from_config(c), 1.0, "sft", 30)
    metrics = lambda loss: {"loss": loss, "grad_norm": 1.0, "weight_norm": 1.0}
    for i in range(20):
        monitor.check(i, metrics(2.0 - 0.05 * i))
    monitor.check(20, metrics(3.0))  # a bump, within range
    with pytest.raises(trainer.DivergenceError, match=r"step 21 of 30: loss 9 > 5 x the running median 1\.5"):
        monitor.check(21, metrics(9.0))


def test_remat_recomputes_the_same_loss_and_gradients():
    """sft.remat = "full" (jax.checkpoint around each scanned layer) changes memory, not the math."""
    params = models.init(CFG, 3)
    batch = next(batching.iterate_batches(examples(8, seed=7), 8, jax.random.key(0), max_len=64))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    grads = {r: jax.jit(jax.value_and_grad(lambda p, r=r: sft.sft_loss(p, batch, cfg=CFG, remat=r)))(params)
             for r in (False, True)}
    np.testing.assert_allclose(grads[True][0], grads[False][0], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads[True][1], grads[False][1])
    jaxpr = {r: str(jax.make_jaxpr(lambda p, r=r: sft.sft_loss(p, batch, cfg=CFG, remat=r))(params)) for r in (0, 1)}
    assert "remat" in jaxpr[1] and "remat" not in jaxpr[0]  # jax.checkpoint shows as remat in a jaxpr
    with pytest.raises(ValueError, match="sft.remat"):
        sft.check_remat("some")
