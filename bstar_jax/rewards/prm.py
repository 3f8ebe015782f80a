"""The process reward model (PRM): a scalar head on the policy's decoder, step scores, Eq. 2.

Paper App. A.1 and Eq. 2 (docs/algorithm.md#rewards). A PRM's params are {"backbone": <decoder params>, "head": {"w":
[E], "b": []}}: the same ModelConfig and layout as the policy, plus one linear map from the final
normed hidden state to a raw logit per token. The official code reads the mean of all LM-head
logits, which equals a scalar head whose w is the mean of the LM-head rows; `init_prm` offers that
("lm_head_mean", code-faithful) or a zero head ("zero", as easy-to-hard).

Step boundaries, in characters of the response (tokenizer-independent). The response is
`steps joined by "\\n\\n"` + `"\\n\\n# Answer\\n\\n{answer}"` (format.split_steps):
  - a reasoning step is a non-blank piece of the text before the last answer marker, split on
    "\\n\\n"; its score character is the step's last non-whitespace character;
  - the answer's score character is the last non-whitespace character after the marker.
Each score character maps to the LAST token whose offset span contains it (`offset_mapping` of a
fast tokenizer), i.e. the token that completes it: a byte-level tokenizer that splits "≈" into
two tokens scores the second, and one that merges "." with the following "\\n\\n" scores the
merged token (which has then also read the separator; harmless, the separator carries the step's
label in training). The official inference scores the first "\\n" of each separator instead,
which needs Mistral's tokenisation of "\\n\\n" as two tokens.

`skip_last_step`: the official inference drops the score at the end of the last reasoning step
(the answer token follows it anyway); off by default, as this project scores every step and the
final answer. Tokens: BOS (if the tokenizer has one) + prompt, then the response tokenised on its
own, as the sampler sees them (tokenizer.encode_example). No EOS is appended: the scores at
earlier positions cannot see it.

Reward (paper App. A.1, Eq. 2): prm = min over the step scores (raw logits); r = 1[correct] + prm/5,
or r = 1[correct] with the answer-only reward. A response is TRUNCATED, and its prm is exactly
-5 (-1 after /5), when it did not finish (no EOS), has no answer marker or an empty answer, is
empty or garbled (bytes are decoded as UTF-8 with replacement characters), or does not fit
`max_len` tokens. (The official code appends -5 to the step list, so a step below -5 would go
lower; here truncated is exactly -5.) Scoring never raises on generated text.
"""
from __future__ import annotations

import functools
import numbers
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bstar_jax.train import batching
from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core import names
from bstar_jax.core.shapes import pow2_bucket, round_up
from bstar_jax import models
from bstar_jax.text.format import ANSWER_MARKER, STEP_SEPARATOR

TRUNCATED_SCORE = -5.0  # the official code's broken-sample entry (paper App. A.1)
PRM_SCALE = 5.0  # Eq. 2: prm / 5 "normalises" the raw logit to about [-1, 1] (unclipped)
HEAD_INITS = names.PRM_HEAD_INITS
HEAD_AXES = {"w": ("embed",), "b": ()}


# ----------------------------------------------------------------------------- params

def init_prm(cfg: models.ModelConfig, backbone_params, init: str = "lm_head_mean") -> dict:
    """PRM params {"backbone", "head"} on top of decoder params (the policy's or the base model's).

    init="lm_head_mean": w = mean of the LM-head rows (tied: of the embedding rows), b = 0, the
    official code's reward (mean over the vocabulary logits). init="zero": w = 0, b = 0.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"unknown PRM head init {init!r}; choose one of {', '.join(HEAD_INITS)}")
    E = cfg.hidden_size
    if init == "zero":
        w = jnp.zeros((E,), jnp.float32)
    elif cfg.tie_word_embeddings:
        w = jnp.mean(jnp.asarray(backbone_params["embed"], jnp.float32), axis=0)  # [V, E] -> [E]
    else:
        w = jnp.mean(jnp.asarray(backbone_params["lm_head"], jnp.float32), axis=1)  # [E, V] -> [E]
    if w.shape != (E,):
        raise ValueError(f"backbone params do not match the config: head weight {w.shape} != ({E},)")
    return {"backbone": backbone_params, "head": {"w": w, "b": jnp.zeros((), jnp.float32)}}


def prm_shardings(cfg: models.ModelConfig, mesh) -> dict:
    """NamedSharding per PRM param, by the one rules table (the head's w follows `embed`)."""
    E = cfg.hidden_size
    return {"backbone": models.param_shardings(cfg, mesh),
            "head": {"w": mesh_lib.named_sharding(HEAD_AXES["w"], mesh, (E,)),
                     "b": NamedSharding(mesh, P())}}


def shard_prm(cfg: models.ModelConfig, prm_params, mesh) -> dict:
    return jax.device_put(prm_params, prm_shardings(cfg, mesh))


# ----------------------------------------------------------------------------- the head

def token_logits(cfg: models.ModelConfig, prm_params, tokens_BxL, positions_BxL=None, segment_ids_BxL=None,
                 remat: bool = False):
    """Raw PRM logit at every position, float32 [B, L] (not jitted: the train step's core).
    positions/segment ids: of packed training rows (batching.pack_step); default one sequence per row.
    remat: recompute layers in its backward pass."""
    hidden_BxLxE, _ = models.hidden_states(cfg, prm_params["backbone"], tokens_BxL, positions_BxL,
                                           segment_ids_BxL=segment_ids_BxL, remat=remat)
    head = prm_params["head"]
    return jnp.einsum("ble,e->bl", hidden_BxLxE.astype(jnp.float32), head["w"].astype(jnp.float32)) \
        + head["b"].astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def step_scores(cfg: models.ModelConfig, prm_params, tokens_BxL, positions_BxM):
    """(scores float32 [B, M], mask bool [B, M]): the raw logits at each row's score positions.

    positions_BxM: int32 token indices into tokens_BxL, -1 = padding (mask False, score 0).
    """
    logits_BxL = token_logits(cfg, prm_params, tokens_BxL)
    mask_BxM = positions_BxM >= 0
    picked = jnp.take_along_axis(logits_BxL, jnp.clip(positions_BxM, 0, tokens_BxL.shape[1] - 1), axis=1)
    return jnp.where(mask_BxM, picked, 0.0), mask_BxM


# ----------------------------------------------------------------------------- text -> positions

def as_text(x) -> str:
    """Generated text as str: bytes decoded as UTF-8 with replacement characters, None -> ""."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).decode("utf-8", errors="replace")
    if x is None:
        return ""
    if isinstance(x, numbers.Number):
        return str(x)
    raise TypeError(f"a response must be str or bytes, got {type(x).__name__}")


def step_char_spans(response: str) -> tuple[list[tuple[int, int]], int | None]:
    """([(start, end) of each reasoning step, whitespace trimmed], score char of the answer | None).

    Same split as format.split_steps; a step's score character is end - 1.
    """
    head = ANSWER_MARKER.lstrip("\n")
    if ANSWER_MARKER in response:
        body_end = response.rfind(ANSWER_MARKER)
        answer_start = body_end + len(ANSWER_MARKER)
    elif response.startswith(head):
        body_end, answer_start = 0, len(head)
    else:
        body_end, answer_start = len(response), None
    spans, start = [], 0
    for piece in response[:body_end].split(STEP_SEPARATOR):
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + lead + len(stripped)))
        start += len(piece) + len(STEP_SEPARATOR)
    answer_char = None
    if answer_start is not None:
        answer = response[answer_start:].rstrip()
        if answer.strip():
            answer_char = answer_start + len(answer) - 1
    return spans, answer_char


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character offsets) of `text` without special tokens, from a fast (transformers) tokenizer."""
    ids, offsets = _encode_many(tokenizer, [text])
    return ids[0], offsets[0]


def _encode_many(tokenizer, texts: Sequence[str]):
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer: step positions need "
                        "its offsets mapping (load it with use_fast=True)")
    if not texts:
        return [], []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return ([list(x) for x in enc["input_ids"]],
            [[tuple(o) for o in offs] for offs in enc["offset_mapping"]])


def bos_ids(tokenizer) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [] if bos is None else [int(bos)]


def tokens_at_chars(offsets: Sequence[tuple[int, int]], chars: Sequence[int]) -> list[int]:
    """For each character, the index of the last token whose span contains it (the token that
    completes it), or -1. Offsets are sorted by start, as every fast tokenizer returns them."""
    if not offsets:
        return [-1] * len(chars)
    starts = np.asarray([s for s, _ in offsets])
    ends = np.asarray([e for _, e in offsets])
    out = []
    for c in chars:
        t = int(np.searchsorted(starts, c, side="right")) - 1  # last token starting at or before c
        while t >= 0 and ends[t] <= c:  # an empty or trimmed span (e.g. whitespace): step back
            t -= 1
        out.append(t)
    return out


def encode_many_for_scoring(tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                            skip_last_step: bool = False) -> list[tuple[list[int], list[int], bool]]:
    """`encode_for_scoring` of many (prompt, response) pairs, tokenised in one batched call."""
    unique_prompts = list(dict.fromkeys(prompts))  # K samples share a prompt: encode it once
    prompt_ids = dict(zip(unique_prompts, _encode_many(tokenizer, unique_prompts)[0]))
    all_ids, all_offsets = _encode_many(tokenizer, responses)
    out = []
    for prompt, response, ids, offsets in zip(prompts, responses, all_ids, all_offsets):
        head = bos_ids(tokenizer) + prompt_ids[prompt]
        spans, answer_char = step_char_spans(response)
        chars = [end - 1 for _, end in spans]
        if skip_last_step and chars and answer_char is not None:
            chars = chars[:-1]
        if answer_char is not None:
            chars.append(answer_char)
        positions = []
        for t in tokens_at_chars(offsets, chars):
            if t >= 0 and (not positions or len(head) + t > positions[-1]):
                positions.append(len(head) + t)
        has_answer = answer_char is not None and tokens_at_chars(offsets, [answer_char])[0] >= 0
        out.append((head + ids, positions, bool(has_answer)))
    return out


def encode_for_scoring(tokenizer, prompt: str, response: str, *, skip_last_step: bool = False):
    """(token ids of BOS + prompt + response, score positions, has_answer).

    The positions are the token indices (in that sequence) of each reasoning step's last token,
    then of the answer's last token; with skip_last_step the last reasoning step's is left out.
    Without an answer (has_answer False) only the steps' positions are returned. A token that
    spans the end of two steps (a tokenizer merging across "\n\n") is scored once.
    """
    return encode_many_for_scoring(tokenizer, [prompt], [response], skip_last_step=skip_last_step)[0]


def step_positions(tokenizer, prompt: str, response: str, *, skip_last_step: bool = False) -> list[int]:
    """Token indices (in BOS + prompt + response tokens) of each step's end and the final answer."""
    return encode_for_scoring(tokenizer, prompt, as_text(response), skip_last_step=skip_last_step)[1]


# ----------------------------------------------------------------------------- rewards

def prm_reward(step_scores, truncated, mask=None) -> np.ndarray:
    """Min over each row's step scores (paper App. A.1); TRUNCATED_SCORE for truncated rows.

    step_scores: an array [B, M] with `mask` bool [B, M] (default all valid), or a ragged list
    of per-row sequences. truncated: bool [B] (or a scalar). A row with no valid score at all
    also gets TRUNCATED_SCORE. Returns float32 [B].
    """
    if mask is None and not isinstance(step_scores, (np.ndarray, jax.Array)):
        rows = [np.asarray(r, np.float32).reshape(-1) for r in step_scores]
        scores_BxM = np.zeros((len(rows), max([r.size for r in rows] + [1])), np.float32)
        mask_BxM = np.zeros(scores_BxM.shape, bool)
        for b, r in enumerate(rows):
            scores_BxM[b, :r.size], mask_BxM[b, :r.size] = r, True
    else:
        scores_BxM = np.asarray(step_scores, np.float32).reshape(len(step_scores), -1)
        mask_BxM = np.ones(scores_BxM.shape, bool) if mask is None else np.asarray(mask, bool)
    truncated_B = np.broadcast_to(np.asarray(truncated, bool), (scores_BxM.shape[0],))
    mins_B = np.min(np.where(mask_BxM, scores_BxM, np.inf), axis=1, initial=np.inf)
    bad_B = truncated_B | ~np.isfinite(mins_B)
    return np.where(bad_B, TRUNCATED_SCORE, mins_B).astype(np.float32)


def combined_reward(correct, prm_min=None) -> np.ndarray:
    """The training reward, computed here and nowhere else: Eq. 2, r = 1[correct] + prm_min / 5,
    from the raw min step score; with prm_min None, Eq. 1, r = 1[correct]. float32, shape of `correct`."""
    r_B = np.asarray(correct, bool).astype(np.float32)
    if prm_min is None:
        return r_B
    return r_B + np.asarray(prm_min, np.float32) / PRM_SCALE


class PRMScores(NamedTuple):
    prm_min: np.ndarray  # float32 [B]: min step score, TRUNCATED_SCORE when truncated
    step_scores: list  # per row, float32 [S_b]: raw logits at each step end then the answer
    truncated: np.ndarray  # bool [B]


def score_responses(cfg: models.ModelConfig, prm_params, tokenizer, prompts: Sequence[str], responses,
                    *, finished=None, skip_last_step: bool = False, batch_size: int = 32,
                    max_len: int | None = None, mesh=None) -> PRMScores:
    """PRM scores of generated responses, batched, bucketed and (with a mesh) sharded.

    prompts: the generation prompt texts (format_prompt(q)); responses: generated text (str or
    bytes; anything garbled is scored, never raised on). finished: bool [B], False for a row that
    ran out of tokens before EOS (default all True). Rows are sorted by length into batches of
    `batch_size` (rounded up to the mesh's data-parallel multiple), each padded to a power of two.
    """
    B = len(responses)
    if len(prompts) != B:
        raise ValueError(f"{len(prompts)} prompts for {B} responses")
    finished = np.ones(B, bool) if finished is None else np.asarray(finished, bool).reshape(B)
    max_len = int(max_len or cfg.max_position_embeddings)
    truncated = ~finished.copy()
    encoded: list = [None] * B
    many = encode_many_for_scoring(tokenizer, [as_text(p) for p in prompts],
                                   [as_text(r) for r in responses], skip_last_step=skip_last_step)
    for i, (ids, positions, has_answer) in enumerate(many):
        if not has_answer or len(ids) > max_len or len(ids) == 0:
            truncated[i] = True
        encoded[i] = (np.asarray(ids, np.int32), np.asarray(positions, np.int32))

    step_lists = [np.zeros((0,), np.float32) for _ in range(B)]
    todo = sorted((i for i in range(B) if not truncated[i]), key=lambda i: encoded[i][0].size)
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    bs = round_up(max(1, batch_size), multiple)
    params = shard_prm(cfg, prm_params, mesh) if mesh is not None else prm_params
    pad_id = cfg.pad_id
    for lo in range(0, len(todo), bs):
        rows = todo[lo:lo + bs]
        L = batching.bucket_length(max(encoded[i][0].size for i in rows), max(max_len, 16))
        M = pow2_bucket(max(encoded[i][1].size for i in rows), 4)
        Bb = bs if len(todo) > bs else round_up(pow2_bucket(len(rows)), multiple)
        tokens = np.full((Bb, L), pad_id, np.int32)
        positions = np.full((Bb, M), -1, np.int32)
        for r, i in enumerate(rows):
            ids, pos = encoded[i]
            tokens[r, :ids.size], positions[r, :pos.size] = ids, pos
        if mesh is not None:
            tokens = distributed.put_global(tokens, mesh_lib.batch_sharding(mesh, 2))
            positions = distributed.put_global(positions, mesh_lib.batch_sharding(mesh, 2))
        scores, _ = step_scores(cfg, params, tokens, positions)
        scores = distributed.to_host(scores)
        for r, i in enumerate(rows):
            step_lists[i] = scores[r, :encoded[i][1].size].copy()
    return PRMScores(prm_reward(step_lists, truncated), step_lists, truncated)
