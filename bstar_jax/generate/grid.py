"""Questions in, responses out: K samples per query at every temperature of a grid.

The string-level layer over `engine.generate_requests` that B-STaR's search needs (the paper's
§3.2-3.3 and Algorithm 1: BS(T, τ) for every T of the grid on the dev subset). `sample_grid` is
one engine call; `sample` cuts any number of questions into calls of a fixed shape (`call_shape`,
docs/models.md#sampler-calls-in-a-run) and keys their rows with common random numbers across
the temperatures (`common_keys`). Rows are expanded query-major,

    row = (q * T + t) * K + k     (query q, temperature index t, sample k; k fastest)

and come back regrouped as [T, Q, K] arrays, one [Q, K] block per temperature — the shape
`metrics` and `balance` take. Since temperature is a traced per-row array, the whole grid is one
compiled call, and a new grid (or a new iteration) reuses the same compile.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bstar_jax.core import distributed, preemption, progress
from bstar_jax.generate import engine
from bstar_jax.generate.strategy import request_keys
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
    call (`engine.generate_requests`): each question's prompt is prefilled once for its T x K
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
    out = engine.generate_requests(cfg, params, prompts_QxP, lens_Q, rng, prompt_index=rows_q,
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


@dataclasses.dataclass(frozen=True)
class CallShape:
    """How `sample` cuts Q questions into sampler calls (docs/models.md#sampler-calls-in-a-run)."""

    per_chunk: int  # questions per chunk (a chunk's rows fill the slots once)
    chunks: int  # chunks over all the questions
    per_call: int  # chunks one sampler call takes through its slots
    rows_per_query: int  # T x K

    @property
    def chunk_rows(self) -> int:
        """Rows of a chunk: the call's cache slots."""
        return self.per_chunk * self.rows_per_query

    @property
    def questions(self) -> int:
        """Questions (distinct prompts) of one call."""
        return self.per_call * self.per_chunk

    @property
    def requests(self) -> int:
        """Rows (requests) of one call."""
        return self.questions * self.rows_per_query


def call_shape(n_questions: int, rows_per_query: int, sampling_config) -> CallShape:
    """The chunking `sample` uses for `n_questions` questions of `rows_per_query` rows each:
    whole questions per chunk, at most sampling.batch_rows rows (at least one question), and
    sampling.requests_per_slot chunks per call."""
    per_chunk = min(max(1, int(sampling_config.batch_rows) // rows_per_query), n_questions)
    chunks = -(-n_questions // per_chunk)
    per_call = min(max(1, int(sampling_config.requests_per_slot)), chunks)
    return CallShape(per_chunk, chunks, per_call, rows_per_query)


def sample(policy, tokenizer, questions: Sequence[str], *, temperatures: Sequence[float], num_samples: int,
           rng, sampling_config, mesh=None) -> GridSamples:
    """sample_grid over all questions, `batch_rows` cache slots per call (docs/models.md#sampler-calls-in-a-run).

    The questions are cut into chunks of at most `batch_rows` rows (whole queries; the last chunk
    padded with repeats of its first query); the rows of query q and sample k of chunk c draw with
    fold_in(fold_in(rng, c), q * K + k) at EVERY temperature of the grid (`common_keys`), so the
    temperatures of a search are compared on common random numbers.
    Each sampler call takes up to `requests_per_slot` chunks through one chunk's rows of slots: a
    slot whose row has ended takes the next row of the call (continuous batching), so a call runs
    until its rows' tokens are spent, not until each chunk's longest row ends. The keys do not
    depend on the grouping: texts are the same for every `requests_per_slot`. Every call has the
    same shape (the last is padded with whole chunks whose rows stop after one token), so a run
    compiles the sampler once per kind of call.
    """
    cfg, params = policy
    rows_per_query = len(temperatures) * int(num_samples)
    shape = call_shape(len(questions), rows_per_query, sampling_config)
    parts = []
    with progress.bar(len(questions) * rows_per_query, unit="rows") as shown:
        for first in range(0, shape.chunks, shape.per_call):
            parts.append(_one_call(cfg, params, tokenizer, questions, first, shape, temperatures, num_samples, rng,
                                   sampling_config, mesh))
            shown.update(parts[-1].texts.size)
            preemption.check()  # between sampler calls: a stop loses this phase's samples, nothing else
    return _concat_queries(parts)


def _one_call(cfg, params, tokenizer, questions, first, shape, temperatures, num_samples, rng, sampling_config,
              mesh) -> GridSamples:
    """The sampler call that starts at chunk `first`: its questions, padded to the call's shape."""
    rows_per_query = len(temperatures) * int(num_samples)
    start = first * shape.per_chunk
    call = list(questions[start:start + shape.questions])
    real = len(call)
    call += [call[0]] * (shape.questions - real)
    keys = jnp.concatenate([common_keys(jax.random.fold_in(rng, c), shape.per_chunk, len(temperatures),
                                        int(num_samples)) for c in range(first, first + shape.per_call)])
    caps = np.full(shape.requests, int(sampling_config.max_new_tokens), np.int32)
    caps[real * rows_per_query:] = 1  # padding rows: one step, then their slot is free
    g = sample_grid(cfg, params, tokenizer, call, temperatures=temperatures, num_samples=int(num_samples),
                    rng=keys, max_new_tokens=int(sampling_config.max_new_tokens),
                    top_p=float(sampling_config.top_p), top_k=int(sampling_config.top_k), mesh=mesh,
                    slots=shape.chunk_rows, row_max_new_tokens=caps)
    return _slice_queries(g, real)


def common_keys(rng, n_questions: int, n_temperatures: int, num_samples: int) -> jax.Array:
    """Row keys [Q * T * K] of one chunk (row = (q * T + t) * K + k): fold_in(rng, q * K + k), the
    same at every t. Each temperature's samples keep their distribution (K independent draws per
    query), but sample k of a query at T and at T' use the same uniforms token by token (common
    random numbers), so a difference between two temperatures' balance scores reflects the
    temperatures more than the luck of the draw. With one temperature these are
    fold_in(rng, r) for row r."""
    keys_QxK = request_keys(rng, n_questions * num_samples).reshape(n_questions, 1, num_samples)
    return jnp.broadcast_to(keys_QxK, (n_questions, n_temperatures, num_samples)).reshape(-1)


def _slice_queries(g: GridSamples, n: int) -> GridSamples:
    """The first n queries of a grid call."""
    return GridSamples(temperatures=g.temperatures, texts=g.texts[:, :n], tokens=g.tokens[:, :n],
                       lengths=g.lengths[:, :n], truncated=g.truncated[:, :n], logprobs=g.logprobs[:, :n],
                       prompt_ids=g.prompt_ids[:n])


def _concat_queries(parts: list[GridSamples]) -> GridSamples:
    """Grid calls side by side along the query axis (token arrays padded to the widest)."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[-1] for p in parts)

    def pad(x):
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])

    cat = lambda xs: np.concatenate(xs, axis=1)
    return GridSamples(temperatures=parts[0].temperatures, texts=cat([p.texts for p in parts]),
                       tokens=cat([pad(p.tokens) for p in parts]), lengths=cat([p.lengths for p in parts]),
                       truncated=cat([p.truncated for p in parts]),
                       logprobs=cat([pad(p.logprobs) for p in parts]),
                       prompt_ids=sum((list(p.prompt_ids) for p in parts), []))
