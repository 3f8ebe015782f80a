"""Parity of our decoder with transformers' torch models, checkpoints in and out, sharding, errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from bstar_jax.core import mesh as mesh_lib
from bstar_jax import models

torch.manual_seed(0)

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _torch_model(kind):
    if kind == "llama":
        config = transformers.LlamaConfig(**TINY, rms_norm_eps=1e-5)
    elif kind == "llama3":
        config = transformers.LlamaConfig(
            **TINY, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 16})
    elif kind == "qwen2":
        config = transformers.Qwen2Config(**TINY, tie_word_embeddings=True)
    elif kind == "mistral":
        config = transformers.MistralConfig(**TINY, sliding_window=5)
    elif kind == "smollm":
        config = transformers.LlamaConfig(**TINY, tie_word_embeddings=True)
    elif kind == "qwen3":  # q/k RMSNorm per head, no biases, head_dim != hidden_size / heads
        config = transformers.Qwen3Config(**TINY, head_dim=24, tie_word_embeddings=False)
    elif kind == "llama3.2":  # tied embeddings and llama3 RoPE scaling
        config = transformers.LlamaConfig(
            **TINY, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8})
    else:
        raise ValueError(kind)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # non-trivial norms and biases, so parity tests can fail
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 12)).astype(np.int32)


@pytest.mark.parametrize("kind", ["llama", "llama3", "qwen2", "mistral", "smollm", "qwen3", "llama3.2"])
def test_logit_parity_with_transformers(kind, tokens, tmp_path):
    model = _torch_model(kind)
    model.save_pretrained(tmp_path)
    cfg, params = models.load(str(tmp_path))
    if kind == "llama3":
        assert dict(cfg.rope_scaling)["factor"] == 8.0
    if kind == "qwen2":
        assert cfg.attention_bias and cfg.tie_word_embeddings and "lm_head" not in params
    if kind == "mistral":
        assert cfg.sliding_window == 5 and tokens.shape[1] > 5
    if kind == "qwen3":
        assert cfg.qk_norm and not cfg.attention_bias and cfg.head_dim == 24 and "q_norm" in params["layers"]
    if kind == "llama3.2":
        assert cfg.tie_word_embeddings and "lm_head" not in params and dict(cfg.rope_scaling)["factor"] == 32.0
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens)))
    ref = _torch_logits(model, tokens)
    assert np.abs(ours - ref).max() <= 1e-4


@pytest.mark.parametrize("kind", ["qwen3", "llama3.2"])
def test_greedy_sampling_is_stepwise_argmax_of_the_forward(kind, tmp_path):
    from bstar_jax.generate import sampling

    _torch_model(kind).save_pretrained(tmp_path)
    cfg, params = models.load(str(tmp_path))
    prompt, n = np.asarray([5, 17, 3, 60, 8], np.int32), 6
    out = sampling.generate(cfg, params, prompt[None], np.asarray([5]), jax.random.key(0), max_new_tokens=n,
                            temperature=0.0, eos_id=-1)
    seq = np.zeros((1, 16), np.int32)  # one width: causal, so the tail changes nothing
    seq[0, :5] = prompt
    for i in range(5, 5 + n):
        seq[0, i] = int(jnp.argmax(models.forward(cfg, params, seq)[0, i - 1]))
    np.testing.assert_array_equal(np.asarray(out.tokens[0]), seq[0, 5:5 + n])


def test_rope_theta_legacy_key():
    d = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 1234.0}
    assert models.ModelConfig.from_hf_dict(d).rope_theta == 1234.0
    d2 = dict(d, rope_parameters={"rope_type": "default", "rope_theta": 99.0})
    del d2["rope_theta"]
    assert models.ModelConfig.from_hf_dict(d2).rope_theta == 99.0


def test_save_hf_roundtrip_through_transformers(tokens, tmp_path):
    cfg = models.ModelConfig(model_type="qwen2", vocab_size=97, hidden_size=64, intermediate_size=96,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, attention_bias=True,
                             tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6)
    params = models.init(cfg, 3)
    params["layers"]["q_bias"] = params["layers"]["q_bias"] + 0.05  # non-zero biases
    models.save_hf(cfg, params, str(tmp_path))
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager")
    ref = _torch_logits(torch_model.float(), tokens)
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens)))
    assert np.abs(ours - ref).max() <= 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hf_folder_roundtrip_is_byte_identical(dtype, tmp_path):
    model = _torch_model("llama").to(getattr(torch, dtype))
    src, dst = tmp_path / "src", tmp_path / "dst"
    model.save_pretrained(src)
    cfg, params = models.load(str(src), param_dtype=dtype)
    models.save_hf(cfg, params, str(dst))
    with safe_open(str(src / "model.safetensors"), "pt") as a, safe_open(str(dst / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            ta, tb = a.get_tensor(k), b.get_tensor(k)
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            assert torch.equal(ta.view(torch.uint8) if ta.dtype == torch.bfloat16 else ta,
                               tb.view(torch.uint8) if tb.dtype == torch.bfloat16 else tb), k


def test_sharded_checkpoint_with_index(tokens, tmp_path):
    model = _torch_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    cfg, params = models.load(str(tmp_path))
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(tokens)))
    assert np.abs(ours - _torch_logits(model, tokens)).max() <= 1e-4
    # ...and writing it back sharded gives a folder transformers reads
    models.save_hf(cfg, params, str(tmp_path / "out"), max_shard_bytes=30_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), attn_implementation="eager")
    assert np.abs(_torch_logits(back, tokens) - ours).max() <= 1e-4


@pytest.mark.parametrize("layout", [dict(data=2, fsdp=4, tensor=1), dict(data=2, fsdp=1, tensor=4)])
def test_sharded_forward_equals_single_device(layout, tokens, n_devices, tmp_path):
    cfg = models.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=4, head_dim=16)
    params = models.init(cfg, 0)
    batch = np.random.default_rng(1).integers(0, 128, (8, 12)).astype(np.int32)
    single = np.asarray(models.forward(cfg, params, jnp.asarray(batch)))
    mesh = mesh_lib.make_mesh(**layout)
    sharded_params = models.shard_params(cfg, params, mesh)
    spec = sharded_params["layers"]["q"].sharding.spec
    assert ("fsdp" in spec) if layout["fsdp"] > 1 else ("tensor" in spec)
    tokens_sharded = jax.device_put(jnp.asarray(batch), mesh_lib.batch_sharding(mesh, 2))
    out = np.asarray(models.forward(cfg, sharded_params, tokens_sharded))
    assert np.abs(out - single).max() <= 1e-5


def test_load_straight_into_mesh(tmp_path, n_devices):
    _torch_model("llama").save_pretrained(tmp_path)
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
    cfg, params = models.load(str(tmp_path), mesh=mesh)
    assert params["layers"]["gate"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


# ----------------------------------------------------------------------------- bad input


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(models.ConfigError, match="unknown model_type 'gpt2'"):
        models.load(str(tmp_path))


def test_missing_shard(tmp_path):
    _torch_model("llama").save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(p for p in os.listdir(tmp_path) if p.endswith(".safetensors"))[0]
    os.remove(tmp_path / shard)
    with pytest.raises(models.CheckpointError, match=f"missing: {shard}"):
        models.load(str(tmp_path))


def test_shape_mismatch(tmp_path):
    _torch_model("llama").save_pretrained(tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    conf["intermediate_size"] = 80
    (tmp_path / "config.json").write_text(json.dumps(conf))
    with pytest.raises(models.CheckpointError, match=r"mlp\..*_proj.weight.*has shape"):
        models.load(str(tmp_path))


def test_missing_gguf_and_offline_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.gguf"):
        models.load(str(tmp_path / "nothere.gguf"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        models.load("someorg/somemodel")


# ----------------------------------------------------------------------------- SmolLM2 GGUF


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers():
    path = models.embedded_path("smollm2-135m")
    folder, fname = os.path.split(path)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname,
                                                                  dtype=torch.float32).eval()
    cfg, params = models.load("smollm2-135m")
    sentence = "The quick brown fox jumps over the lazy dog because it was late for dinner."
    ids = np.asarray([tok(sentence)["input_ids"]], dtype=np.int32)
    ours = np.asarray(models.forward(cfg, params, jnp.asarray(ids)))
    assert np.abs(ours - _torch_logits(ref_model, ids)).max() <= 1e-3

    question = ("# Question\n\nNatalia sold clips to 48 of her friends in April, and then she sold half "
                "as many clips in May. How many clips did Natalia sell altogether?\n\n# Solution\n\n")
    ids = tok(question)["input_ids"]
    with torch.no_grad():
        ref = ref_model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                 eos_token_id=None)[0, len(ids):].tolist()
    ours_ids = list(ids)
    step = jax.jit(lambda p, t: models.forward(cfg, p, t)[0, -1].argmax())
    for _ in range(20):
        ours_ids.append(int(step(params, jnp.asarray([ours_ids], dtype=jnp.int32))))
    assert ours_ids[len(ids):] == ref
