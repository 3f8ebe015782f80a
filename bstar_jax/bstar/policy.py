"""The starting policy P_0 and its tokenizer.

Either loaded (`config.model.path`: HF folder, .gguf, embedded alias, hub id) and, when
`config.p0_sft.steps` > 0, fine-tuned on the training set's reference solutions first (the paper's
P_0 is the SFT checkpoint after epoch 1, so that it answers in the `# Answer` format), or — for the
offline demo — made here: train a byte-level BPE on the task's training text, initialise a tiny
Llama-family model and fine-tune it on reference solutions (in several equation orders, so that
exploration has something to find) to a warm start, the analogue of that epoch-1 checkpoint. Both
fine-tunes run on the shared trainer as the call plan declares them (config/plan.py, `p0`: each
with its own optimizer block, config.p0_sft or config.warm_start). The result is saved as an HF
folder in <workdir>/p0 and reused.
"""
from __future__ import annotations

import logging
import tempfile

from bstar_jax.core import distributed, files, preemption, streams
from bstar_jax.config import plan, sizing
from bstar_jax import models
from bstar_jax.train import sft
from bstar_jax.text import tokenizer as tok
from bstar_jax.text.format import format_prompt
from bstar_jax.data import Example, code_synthetic, with_alternatives


def load_policy(config, mesh, train: list[Example]):
    """(config with its sizes resolved, tokenizer, (cfg, params) of P_0 on `mesh`).

    Sizes that follow from device memory (sampling.hbm_fraction, sft.hbm_fraction; docs/memory.md)
    are resolved once (sizing.resolve_sizes), as soon as P_0's shapes are known and before P_0 is
    fine-tuned; P_0's fine-tune and the loop read the same resolved config. A P_0 that is made
    here (warm_start.enabled or p0_sft.steps > 0) is cached in <workdir>/p0 and reused."""
    m = config.model
    folder = files.path(config.workdir) / "p0"
    fine_tune = plan.p0(config)
    if fine_tune is not None and _cached(folder):
        local = files.local_folder(folder)  # transformers and safetensors read local files
        tokenizer, p0 = _load_model(config, mesh, local, local)
        return _sized(config, p0[0], mesh), tokenizer, p0
    if fine_tune is None:
        tokenizer, p0 = _load_model(config, mesh, m.tokenizer or m.path, m.path)
        return _sized(config, p0[0], mesh), tokenizer, p0
    draws = streams.Streams(config.seed)  # P_0's draws take no run number: every run shares P_0
    if config.warm_start.enabled:
        tokenizer, cfg, mixed = _warm_start_model(config, train, folder, draws.seed("warm_start_data"))
        config = _sized(config, cfg, mesh)
        _fine_tune_and_save(config, mesh, tokenizer, cfg, models.init(cfg, draws.key("init")),
                            sft_examples(tokenizer, mixed), folder, draws.key("warm_start"),
                            description="warm start P_0")
    else:
        tokenizer, (cfg, params) = _load_model(config, mesh, m.tokenizer or m.path, m.path)
        config = _sized(config, cfg, mesh)
        logging.info("P_0: %d SFT steps of %s on reference solutions (cached in %s)", int(config.p0_sft.steps),
                     m.path, folder)
        _fine_tune_and_save(config, mesh, tokenizer, cfg, params, sft_examples(tokenizer, train), folder,
                            draws.key("p0"), description="SFT to P_0")
    local = files.local_folder(folder)
    return (config, *_load_model(config, mesh, local, local))


def _sized(config, cfg, mesh):
    sized = sizing.resolve_sizes(config, cfg, mesh)
    if sized is not config:
        logging.info("sizes from device memory: sampling.batch_rows=%d, sft.micro_batch_size=%d, "
                     "p0_sft.micro_batch_size=%d", int(sized.sampling.batch_rows), int(sized.sft.micro_batch_size),
                     int(sized.p0_sft.micro_batch_size))
    return sized


@distributed.decided_on_writer
def _cached(folder) -> bool:
    """True when P_0 is already in `folder` (the writer looks; every process follows)."""
    return (files.path(folder) / "config.json").exists()


def _load_model(config, mesh, tokenizer_path: str, model_path: str):
    m = config.model
    tokenizer = tok.load_tokenizer(tokenizer_path)
    cfg, params = models.load(model_path, mesh=mesh, param_dtype=m.param_dtype, dtype=m.dtype)
    if cfg.eos_token_id is None and tokenizer.eos_token_id is not None:
        cfg = cfg.replace(eos_token_id=int(tokenizer.eos_token_id))
    return tokenizer, (cfg, params)


def _fine_tune_and_save(config, mesh, tokenizer, cfg, params, examples, folder, key, *, description: str) -> None:
    """P_0's fine-tune as the plan declares it (plan.p0: its trainer config and steps; `key`: its
    SFT batch order), then the model and tokenizer saved into <folder>.partial and renamed into
    place, so that a kill never leaves half a P_0. Every process trains (the step is one program
    over the global mesh); process 0 alone writes, the others wait until P_0 is in place."""
    preemption.at(description)
    fine_tune = plan.p0(config)
    sft_config = fine_tune.config
    sft_config.pad_id = int(tokenizer.pad_token_id or 0)
    state = sft.init_train_state(cfg, params, sft_config, mesh)
    state, stats = sft.run_sft(state, examples, cfg, sft_config, mesh, key, num_steps=fine_tune.steps,
                               progress=bool(config.progress), description=description)
    logging.info("%s: final SFT loss %.4f after %d steps (%.0f tok/s)", description, stats["loss"], stats["steps"],
                 stats["tokens_per_s"])
    params = distributed.to_host(state.params)  # a collective: every process gathers
    if distributed.is_writer():
        def save_p0(tmp):
            models.save_hf(cfg, params, tmp)
            with tempfile.TemporaryDirectory() as local:  # save_pretrained writes local files only
                tokenizer.save_pretrained(local)
                files.copy_tree(local, tmp)

        files.write_then_rename(folder, save_p0)
    distributed.barrier(f"p0 saved: {folder}")


def sft_examples(tokenizer, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids + EOS) for SFT on reference solutions (problems without one, as
    some APPS problems are, left out)."""
    return [tok.encode_example(tokenizer, format_prompt(e.question), e.solution) for e in examples if e.solution]


def warm_start_examples(data_name: str, train: list[Example], n_per_problem: int, seed: int) -> list[Example]:
    """The warm start's SFT data: each problem with `n_per_problem` distinct correct solutions where
    the dataset can write them (synthetic: equation orders; code_synthetic: programs), else with
    its reference solution."""
    if data_name == "synthetic":
        return with_alternatives(train, n_per_problem, seed=seed)
    if data_name == "code_synthetic":
        return code_synthetic.with_alternatives(train, n_per_problem, seed=seed)
    return [e for e in train if e.solution]


def _warm_start_model(config, train: list[Example], folder, data_seed: int):
    """(tokenizer, model config, reference solutions) of the warm start: a BPE trained on the
    task's text (written into <folder>.partial) and a tiny Llama-family model of warm_start's shape;
    `data_seed` draws the alternative solutions."""
    w = config.warm_start
    logging.info("warm start: training a %d-token BPE and a tiny model to P_0 (cached in %s)", w.vocab_size, folder)
    # P_0's staging folder: write_then_rename clears it, writes P_0 there (this tokenizer again
    # included) and renames it into place when complete, so a kill never leaves half a P_0.
    tmp = files.partial_path(folder)
    mixed = warm_start_examples(config.data.name, train, int(w.orders_per_problem), data_seed)
    texts = [format_prompt(e.question) + e.solution for e in mixed]
    # Process 0 trains and writes the tokenizer; every process (process 0 too) loads that very
    # file, so that loading takes the same decisions everywhere.
    if distributed.is_writer():
        with tempfile.TemporaryDirectory() as local:  # the tokenizers library writes local files only
            tok.train_bpe(texts, int(w.vocab_size), local)
            files.copy_tree(local, tmp)
    distributed.barrier(f"p0 tokenizer: {folder}")
    tokenizer = tok.load_tokenizer(files.local_folder(tmp))
    cfg = models.ModelConfig(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=int(w.hidden_size),
        intermediate_size=int(w.intermediate_size), num_layers=int(w.num_layers), num_heads=int(w.num_heads),
        num_kv_heads=int(w.num_kv_heads), head_dim=int(w.hidden_size) // int(w.num_heads),
        max_position_embeddings=int(w.max_len), tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return tokenizer, cfg, mixed
