"""Questions in, responses out: K samples per query at every temperature of a grid, in ONE call.

The string-level layer over `continuous.generate_requests` that B-STaR's search needs (the paper's
§3.2-3.3 and Algorithm 1: BS(T, τ) for every T of the grid on the dev subset). Rows are expanded query-major,

    row = (q * T + t) * K + k     (query q, temperature index t, sample k; k fastest)

and come back regrouped as [T, Q, K] arrays, one [Q, K] block per temperature — the shape
`metrics` and `balance` take. Since temperature is a traced per-row array, the whole grid is one
compiled call, and a new grid (or a new iteration) reuses the same compile.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from bstar_jax.generate import engine as continuous
from bstar_jax.core import distributed
from bstar_jax.text.tokenizer import encode_prompts


@dataclasses.dataclass
class GridSamples:
    """Responses of one grid call; every array is [T, Q, K, ...] (temperature, query, sample)."""

    temperatures: np.ndarray  # float32 [T]
    texts: np.ndarray  # object [T, Q, K]: decoded responses (special tokens skipped)
    tokens: np.ndarray  # int32 [T, Q, K, N]: response token ids, pad after EOS
    lengths: np.ndarray  # int32 [T, Q, K]: tokens generated, EOS included
    truncated: np.ndarray  # bool [T, Q, K]: no EOS within max_new_tokens
    logprobs: np.ndarray  # float32 [T, Q, K, N]: raw (T = 1) log-probs of the tokens, 0 after EOS
    prompt_ids: list  # [Q] lists of int: the prompt each query's rows continued

    def response_ids(self, t: int, q: int, k: int) -> list[int]:
        """Token ids of one response, EOS included when there is one."""
        return self.tokens[t, q, k, :self.lengths[t, q, k]].tolist()


def encode_questions(tokenizer, questions: Sequence[str]) -> list[list[int]]:
    """Prompt ids of each question in the project's prompt format (tokenizer.encode_prompts)."""
    return encode_prompts(tokenizer, questions)


def sample_grid(cfg, params, tokenizer, questions: Sequence[str], *, temperatures: Sequence[float],
                num_samples: int, rng, max_new_tokens: int, top_p: float = 1.0, top_k: int = 0,
                eos_id: int | None = None, mesh=None, slots: int | None = None,
                row_max_new_tokens=None) -> GridSamples:
    """K = `num_samples` responses per question at each temperature, from one continuous-batching
    call (`continuous.generate_requests`): each question's prompt is prefilled once for its T x K
    rows, and `slots` cache rows (None: one per row) take the rows in order as earlier ones end.

    eos_id defaults to the tokenizer's EOS. rng: one key (row r draws with fold_in(rng, r)) or a
    key array [Q * T * K], each row's own key (see the module docstring for the row order); a
    row's draw depends on its key alone, so a call is reproducible. row_max_new_tokens: None or
    int [Q * T * K], a row's own cap (a padding row given 1 frees its slot after one step).
    """
    questions = list(questions)
    temps = np.asarray(temperatures, np.float32).reshape(-1)
    if not questions:
        raise ValueError("sample_grid: no questions")
    if temps.size == 0:
        raise ValueError("sample_grid: empty temperature grid")
    if int(num_samples) < 1:
        raise ValueError(f"sample_grid: num_samples must be >= 1, got {num_samples}")
    Q, T, K = len(questions), temps.size, int(num_samples)
    if eos_id is None:
        eos_id = -1 if tokenizer.eos_token_id is None else int(tokenizer.eos_token_id)

    prompt_ids = encode_questions(tokenizer, questions)
    lens_Q = np.array([len(p) for p in prompt_ids], np.int32)
    if lens_Q.min() == 0:
        raise ValueError("sample_grid: a question encodes to an empty prompt")
    prompts_QxP = np.zeros((Q, lens_Q.max()), np.int32)
    for q, ids in enumerate(prompt_ids):
        prompts_QxP[q, :len(ids)] = ids

    rows_q = np.repeat(np.arange(Q), T * K)  # row = (q * T + t) * K + k
    temperature_R = np.tile(np.repeat(temps, K), Q)
    out = continuous.generate_requests(cfg, params, prompts_QxP, lens_Q, rng, prompt_index=rows_q,
                                       slots=slots, max_new_tokens=max_new_tokens, temperature=temperature_R,
                                       request_max_new_tokens=row_max_new_tokens,
                                       top_p=top_p, top_k=top_k, eos_id=eos_id, mesh=mesh)
    # Whole on every process, even when the rows were sharded over several hosts.
    tokens_RxN, lengths_R, logprobs_RxN = distributed.to_host((out.tokens, out.lengths, out.logprobs))
    last_R = tokens_RxN[np.arange(len(lengths_R)), np.maximum(lengths_R - 1, 0)]
    truncated_R = ~((lengths_R > 0) & (last_R == eos_id))
    # The tokenizer decodes invalid UTF-8 (a response cut mid-character) with U+FFFD.
    texts_R = tokenizer.batch_decode([t[:n].tolist() for t, n in zip(tokens_RxN, lengths_R)],
                                     skip_special_tokens=True)

    def grid(x):  # [R, ...] -> [T, Q, K, ...]
        x = np.asarray(x).reshape(Q, T, K, *np.shape(x)[1:])
        return np.swapaxes(x, 0, 1)

    texts = np.empty(len(texts_R), dtype=object)
    texts[:] = texts_R
    return GridSamples(temperatures=temps, texts=grid(texts), tokens=grid(tokens_RxN),
                       lengths=grid(lengths_R), truncated=grid(truncated_R), logprobs=grid(logprobs_RxN),
                       prompt_ids=prompt_ids)
