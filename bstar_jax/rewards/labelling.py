"""Math-Shepherd step labels (Wang et al. 2024b; paper App. A.1) with our own sampler.

For each sampled solution with an answer, each reasoning-step prefix k (steps 1..k) is completed
`n_completions` times; the step's hard label is 1 if any completion reaches the gold answer
(`verify.is_correct`), its soft label the fraction that do. The answer step "# Answer\\n\\n{a}"
is labelled by the solution's own correctness. The official data: 15 samples per query from the
epoch-1 SFT model, 8 completions per step from the epoch-3 model, hard integer labels.

Every prefix of every solution goes through ONE `sampling.generate` call (or one per
`max_batch` rows: the number of calls depends on the number of rows only through that chunking,
never on how they split into solutions and prefixes). A call's rows are `n_completions` copies of
each prefix, a cache slot each (the sampling engine without refills). The completion prompt for
prefix k is BOS + format_prompt(q), then the solution's own tokens up to the start of step k+1
(or of "# Answer"): in text, format_prompt(q) + steps[:k] joined by "\n\n" + "\n\n", in tokens
exactly what the whole response tokenises to, as the policy was trained on it (tokenising a
prompt that ends in "\n\n" on its own can merge the newlines into a token the model never sees
mid-response).
Solutions without an answer are dropped, as the official pipeline drops samples without
"\n\n# Answer\n\n" (their indices are returned). Completions are decoded without special
tokens and graded on prefix text + completion.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np

from bstar_jax.core import distributed, preemption, progress
from bstar_jax import models
from bstar_jax.generate import sampling
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards import verify
from bstar_jax.rewards.records import PRMRecord
from bstar_jax.text.format import ANSWER_MARKER, format_prompt


class LabelResult(NamedTuple):
    records: list  # PRMRecord per kept solution: steps + ["# Answer\n\n{a}"], one label each
    kept: list  # index (into the inputs) of each record's solution
    dropped: list  # indices of solutions without an answer
    generate_calls: int  # sampling.generate calls made


def prompts_per_call(rows: int, n_completions: int) -> int:
    """A bound on the distinct prompts (step prefixes) of one call of `rows` rows, for sizing its
    program: a call's rows are `n_completions` consecutive copies of each prefix and calls start
    at multiples of `rows`, so exactly rows / n when n divides rows, else at most
    ceil((rows - 1) / n) + 1 (a prefix cut at each end)."""
    rows, n = int(rows), int(n_completions)
    return min(rows, rows // n if rows % n == 0 else -(-(rows - 1) // n) + 1)


@distributed.decided_on_writer
def _are_correct(texts, golds, task: str, mode: str) -> list[bool]:
    """verify.are_correct, graded by the writer for every process: math-verify's time limits make
    a verdict depend on the clock, and every host must label alike."""
    return list(verify.are_correct(texts, golds, task, mode=mode))


def _decode(tokenizer, ids) -> str:
    try:
        return prm_lib.as_text(tokenizer.decode([int(t) for t in ids], skip_special_tokens=True))
    except Exception:  # ids the tokenizer cannot decode: a garbled completion is simply wrong
        return ""


def label_steps(cfg: models.ModelConfig, params, tokenizer, questions: Sequence[str], responses,
                golds: Sequence, *, task: str, rng, n_completions: int = 8, max_new_tokens: int = 256,
                temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, eos_id: int | None = None,
                soft: bool = False, max_batch: int | None = None, grade_mode: str = "normalized",
                mesh=None) -> LabelResult:
    """Math-Shepherd labels for `responses[i]` to `questions[i]` with gold answer `golds[i]`.

    params: the completer's decoder params. n_completions: completions per step prefix.
    soft: label = fraction of completions that reach the gold (else 1 if any does).
    max_batch: at most this many rows per generate call (default: all rows in one call).
    """
    n = len(responses)
    if len(questions) != n or len(golds) != n:
        raise ValueError(f"label_steps: {len(questions)} questions, {n} responses, {len(golds)} golds")
    if n_completions < 1:
        raise ValueError(f"n_completions must be >= 1, got {n_completions}")
    if task not in verify.TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(verify.TASKS)}")
    if eos_id is None:
        eos_id = getattr(tokenizer, "eos_token_id", None)
        eos_id = cfg.eos_token_id if eos_id is None else eos_id
    if eos_id is None:
        raise ValueError("label_steps needs an eos_id (neither the tokenizer nor the config has one)")

    kept, dropped, parsed = [], [], []
    for i in range(n):
        text = prm_lib.as_text(responses[i])
        spans, answer_char = prm_lib.step_char_spans(text)
        if answer_char is None:
            dropped.append(i)
            continue
        kept.append(i)
        head = text.rfind(ANSWER_MARKER) + 2 if ANSWER_MARKER in text else 0  # start of "# Answer"
        parsed.append((text, spans, text[head:]))

    # One prompt per (solution, prefix k): the solution's own tokens up to the start of step k+1
    # (or of "# Answer"), so the completer continues exactly the token sequence the response
    # tokenises to (a prompt ending in "\n\n" tokenised alone can merge the newlines differently).
    bos = prm_lib.bos_ids(tokenizer)
    prefixes, prompt_ids, owners = [], [], []
    for r, (text, spans, answer_block) in enumerate(parsed):
        if not spans:
            continue
        q_ids = bos + list(tokenizer.encode(format_prompt(questions[kept[r]]), add_special_tokens=False))
        resp_ids, offsets = prm_lib.encode_with_offsets(tokenizer, text)
        ends = np.asarray([e for _, e in offsets] or [0])
        cuts = [s for s, _ in spans[1:]] + [len(text) - len(answer_block)]
        for k, cut in enumerate(cuts):
            n_tok = int(np.sum(np.cumsum(ends > cut) == 0))  # tokens ending at or before the cut
            prefixes.append(text[:int(ends[n_tok - 1])] if n_tok else "")
            prompt_ids.append(q_ids + resp_ids[:n_tok])
            owners.append((r, k))
    rows = [p for p in range(len(prefixes)) for _ in range(n_completions)]

    correct = np.zeros(len(rows), bool)
    calls = 0
    if rows:
        P = max(len(prompt_ids[p]) for p in rows)
        chunk = len(rows) if not max_batch else int(max_batch)
        with progress.bar(len(rows), unit="completions") as shown:
            for c, lo in enumerate(range(0, len(rows), chunk)):
                chunk_rows = rows[lo:lo + chunk]
                prompts = np.zeros((len(chunk_rows), P), np.int32)
                lengths = np.zeros(len(chunk_rows), np.int32)
                for b, p in enumerate(chunk_rows):
                    prompts[b, :len(prompt_ids[p])] = prompt_ids[p]
                    lengths[b] = len(prompt_ids[p])
                out = sampling.generate(cfg, params, prompts, lengths, jax.random.fold_in(rng, c),
                                        max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, top_k=top_k, eos_id=int(eos_id), mesh=mesh)
                calls += 1
                tokens, out_lengths = distributed.to_host((out.tokens, out.lengths))
                fulls = []
                preemption.check()  # between completion calls
                for b, p in enumerate(chunk_rows):
                    ids = tokens[b, :out_lengths[b]]
                    if ids.size and ids[-1] == eos_id:
                        ids = ids[:-1]
                    fulls.append(prefixes[p] + _decode(tokenizer, ids))
                chunk_golds = [golds[kept[owners[p][0]]] for p in chunk_rows]
                correct[lo:lo + len(chunk_rows)] = _are_correct(fulls, chunk_golds, task, grade_mode)
                shown.update(len(chunk_rows))

    per_prefix = correct.reshape(len(prefixes), n_completions) if rows else np.zeros((0, n_completions))
    scores = per_prefix.mean(axis=1) if soft else per_prefix.any(axis=1).astype(np.float64)
    labels: list[list[float]] = [[0.0] * len(spans) for _, spans, _ in parsed]
    for p, (r, k) in enumerate(owners):
        labels[r][k] = float(scores[p])
    records = []
    answers_ok = _are_correct([text for text, _, _ in parsed], [golds[i] for i in kept], task, grade_mode)
    for r, ((text, spans, answer_block), answer_ok) in enumerate(zip(parsed, answers_ok)):
        steps = tuple(text[a:b] for a, b in spans) + (answer_block.rstrip(),)
        records.append(PRMRecord(questions[kept[r]], steps, tuple(labels[r]) + (float(answer_ok),)))
    return LabelResult(records, kept, dropped, calls)
