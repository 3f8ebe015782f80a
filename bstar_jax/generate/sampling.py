"""The sampler's public call: `generate(cfg, params, prompts, prompt_lengths, rng, ...)`.

    from bstar_jax import sampling
    out = sampling.generate(cfg, params, prompts, lengths, jax.random.key(0), max_new_tokens=64,
                            temperature=np.array([0.0, 0.7, 1.0]), eos_id=tokenizer.eos_token_id)

A thin call into the compiled engine (engine.py): one request per row and a slot each, so no
slot is refilled (rows that repeat a prompt share its prefill when `engine.shares_prefill`).
Three layers, as gemma `gm.text` and google-deepmind/simply: the strategy (strategy.py:
temperature, top-p, top-k, the draw), the engine (prefill and the decode loop over the model's
KV cache, compiled once per bucket), and this call.

Temperature and top-p are traced per-row float32 [B] arrays, so one compile serves a whole
temperature grid (the paper's §3.2-3.3 and Algorithm 1; docs/models.md); top-k, max_new_tokens
and the shapes are static. Row b's step t draws from the key fold_in(fold_in(rng, b), t): a row's
sample depends only on (rng, its row index, its prompt, its settings, N), not on the batch
padding, the bucket, the other rows or the mesh.
"""
from __future__ import annotations

from bstar_jax import models
from bstar_jax.generate import engine
from bstar_jax.generate.strategy import SampleOutput

__all__ = ["SampleOutput", "generate"]


def generate(cfg: models.ModelConfig, params, prompts, prompt_lengths, rng, *, max_new_tokens: int,
             temperature=1.0, top_p=1.0, top_k: int = 0, eos_id: int, mesh=None) -> SampleOutput:
    """Samples up to `max_new_tokens` tokens after each prompt, in one compiled call.

    prompts: int [B, P]; row b's prompt is prompts[b, :prompt_lengths[b]] (right-padded; what
    lies past a row's length is ignored). temperature, top_p: a float or float32 [B] (per row;
    temperature 0 = greedy for that row). top_k: 0 = off. eos_id: the token that ends a row (-1:
    none, always N tokens). rng: one key (row b draws with fold_in(rng, b)). mesh: when given,
    the rows are split along mesh.BATCH_AXES and params by the rules table.
    Returns SampleOutput(tokens int32 [B, N] pad after EOS, lengths int32 [B] EOS included,
    logprobs float32 [B, N] raw temperature-1 log-probs of the chosen tokens); a row samples the
    same tokens for the same key whatever the batch it is in, bucket or mesh. Bad input raises
    one ValueError naming the argument.
    """
    # The engine checks the inputs (call_inputs.validate_inputs) before padding them to buckets.
    return engine.generate_requests(cfg, params, prompts, prompt_lengths, rng, max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, top_k=top_k, eos_id=eos_id, mesh=mesh)
