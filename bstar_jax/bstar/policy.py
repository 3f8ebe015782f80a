"""The starting policy P_0 and its tokenizer.

Either loaded (`config.model.path`: HF folder, .gguf, embedded alias, hub id) and, when
`config.p0_sft.steps` > 0, fine-tuned on the training set's reference solutions first (the paper's
P_0 is the SFT checkpoint after epoch 1, so that it answers in the `# Answer` format), or — for the
offline demo — made here: train a byte-level BPE on the task's training text, initialise a tiny
Llama-family model and fine-tune it on reference solutions (in several equation orders, so that
exploration has something to find) to a warm start, the analogue of that epoch-1 checkpoint. Both
fine-tunes run on the shared trainer (docs/training.md). The result is saved as an HF folder in
<workdir>/p0 and reused.
"""
from __future__ import annotations

import logging
import tempfile

import ml_collections

from bstar_jax.core import distributed, streams
from bstar_jax.config import sizing as hbm
from bstar_jax import models
from bstar_jax.train import sft
from bstar_jax.text import tokenizer as tok
from bstar_jax.data import Example, code_synthetic, with_alternatives


def load_policy(config, mesh, train: list[Example]):
    """(tokenizer, (cfg, params)) of P_0 on `mesh`; builds and caches it when warm_start.enabled."""
    m = config.model
    if config.warm_start.enabled:
        folder = distributed.path(config.workdir) / "p0"
        if not (folder / "config.json").exists():
            _train_p0(config, mesh, train, folder)
        local = distributed.local_folder(folder)  # transformers and safetensors read local files
        tokenizer = tok.load_tokenizer(local)
        cfg, params = models.load(local, mesh=mesh, param_dtype=m.param_dtype, dtype=m.dtype)
        return tokenizer, (cfg, params)
    if int(config.p0_sft.steps) > 0:
        folder = distributed.path(config.workdir) / "p0"
        if not (folder / "config.json").exists():
            tokenizer, (cfg, params) = _load_model(config, mesh, m.tokenizer or m.path, m.path)
            _sft_p0(config, mesh, tokenizer, cfg, params, train, folder)
        local = distributed.local_folder(folder)
        return _load_model(config, mesh, local, local)
    return _load_model(config, mesh, m.tokenizer or m.path, m.path)


def _load_model(config, mesh, tokenizer_path: str, model_path: str):
    m = config.model
    tokenizer = tok.load_tokenizer(tokenizer_path)
    cfg, params = models.load(model_path, mesh=mesh, param_dtype=m.param_dtype, dtype=m.dtype)
    if cfg.eos_token_id is None and tokenizer.eos_token_id is not None:
        cfg = cfg.replace(eos_token_id=int(tokenizer.eos_token_id))
    return tokenizer, (cfg, params)


def _sft_p0(config, mesh, tokenizer, cfg, params, train: list[Example], folder) -> None:
    """SFT on the reference solutions of `train` for p0_sft.steps steps; saved as an HF folder."""
    p = config.p0_sft
    micro = int(p.micro_batch_size)
    if float(config.sft.hbm_fraction) > 0:  # the micro-batch follows from device memory (docs/memory.md)
        micro = int(hbm.resolve_sizes(config, cfg, mesh, hbm.prompt_bucket(config)).p0_sft.micro_batch_size)
    logging.info("P_0: %d SFT steps of %s on reference solutions (cached in %s)", int(p.steps), config.model.path,
                 folder)
    _fine_tune_and_save(config, mesh, tokenizer, cfg, params, sft_examples(tokenizer, train), folder,
                        steps=int(p.steps), stream="p0", description="SFT to P_0",
                        overrides=dict(lr=float(p.lr), batch_size=int(p.batch_size),
                                       micro_batch_size=micro))


def _fine_tune_and_save(config, mesh, tokenizer, cfg, params, examples, folder, *, steps: int, stream: str,
                        description: str, overrides: dict) -> None:
    """`steps` SFT steps (warmup a tenth, cosine to a tenth of the LR) from config.sft with
    `overrides`, then the model and tokenizer saved into <folder>.partial and renamed into place,
    so that a kill never leaves half a P_0. Every process trains (the step is one program over
    the global mesh); process 0 alone writes, the others wait until P_0 is in place."""
    tmp = folder.with_name(folder.name + ".partial")
    sft_config = ml_collections.ConfigDict(config.sft.to_dict())
    sft_config.update(dict(overrides, pad_id=int(tokenizer.pad_token_id or 0)))
    sft_config.update(dict(min_lr=float(sft_config.lr) / 10, warmup_steps=max(1, steps // 10), decay_steps=steps))
    state = sft.init_train_state(cfg, params, sft_config, mesh)
    key = streams.Streams(config.seed).key(stream)  # SFT batch order of this fine-tune
    state, stats = sft.run_sft(state, examples, cfg, sft_config, mesh, key, num_steps=steps,
                               progress=bool(config.progress), description=description)
    logging.info("%s: final SFT loss %.4f after %d steps (%.0f tok/s)", description, stats["loss"], stats["steps"],
                 stats["tokens_per_s"])
    params = distributed.to_host(state.params)  # a collective: every process gathers
    if distributed.is_writer():
        models.save_hf(cfg, params, tmp)
        with tempfile.TemporaryDirectory() as local:  # save_pretrained writes local files only
            tokenizer.save_pretrained(local)
            distributed.copy_tree(local, tmp)
        tmp.rename(folder)
    distributed.barrier(f"p0 saved: {folder}")


def sft_examples(tokenizer, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids + EOS) for SFT on reference solutions (problems without one, as
    some APPS problems are, left out)."""
    return [tok.encode_example(tokenizer, tok.format_prompt(e.question), e.solution) for e in examples if e.solution]


def warm_start_examples(data_name: str, train: list[Example], n_per_problem: int, seed: int) -> list[Example]:
    """The warm start's SFT data: each problem with `n_per_problem` distinct correct solutions where
    the dataset can write them (synthetic: equation orders; code_synthetic: programs), else with
    its reference solution."""
    if data_name == "synthetic":
        return with_alternatives(train, n_per_problem, seed=seed)
    if data_name == "code_synthetic":
        return code_synthetic.with_alternatives(train, n_per_problem, seed=seed)
    return [e for e in train if e.solution]


def _train_p0(config, mesh, train: list[Example], folder) -> None:
    w = config.warm_start
    logging.info("warm start: training a %d-token BPE and a tiny model to P_0 (cached in %s)", w.vocab_size, folder)
    # Renamed into place when complete, so a kill never leaves half a P_0.
    tmp = folder.with_name(folder.name + ".partial")
    mixed = warm_start_examples(config.data.name, train, int(w.orders_per_problem), int(config.seed))
    texts = [tok.format_prompt(e.question) + e.solution for e in mixed]
    # Process 0 trains and writes the tokenizer; the others load that very file.
    if distributed.is_writer():
        with tempfile.TemporaryDirectory() as local:  # the tokenizers library writes local files only
            tokenizer = tok.train_bpe(texts, int(w.vocab_size), local)
            distributed.copy_tree(local, tmp)
    distributed.barrier(f"p0 tokenizer: {folder}")
    if not distributed.is_writer():
        tokenizer = tok.load_tokenizer(distributed.local_folder(tmp))
    cfg = models.ModelConfig(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=int(w.hidden_size),
        intermediate_size=int(w.intermediate_size), num_layers=int(w.num_layers), num_heads=int(w.num_heads),
        num_kv_heads=int(w.num_kv_heads), head_dim=int(w.hidden_size) // int(w.num_heads),
        max_position_embeddings=int(w.max_len), tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    params = models.init(cfg, int(config.seed))
    _fine_tune_and_save(config, mesh, tokenizer, cfg, params, sft_examples(tokenizer, mixed), folder,
                        steps=int(w.steps), stream="warm_start", description="warm start P_0",
                        overrides=dict(lr=float(w.lr), freeze_embeddings=False, freeze_lm_head=False,
                                       freeze_norms=False, batch_size=int(w.batch_size),
                                       micro_batch_size=int(w.batch_size), weight_decay=0.0))
