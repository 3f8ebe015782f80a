"""Useful tokens per second: the sampling engine with refills vs static batches, same slots.

Useful tokens are the tokens of each response up to and including its EOS. A response's length
is forced: every request gets its own cap (`request_max_new_tokens`) drawn from the distribution
below and no EOS (eos_id=-1), so it emits exactly that many tokens — model weights cannot be
made to stop at chosen lengths. The static reference (tests/oracles/static_sampler.py: prefill
every row, decode until the longest row ends) gets the same requests in batches of S rows (the same cache rows as our S slots); a
static batch runs until its longest row ends, so each batch is run with max_new_tokens = that
batch's longest length: exactly the steps it takes when its rows emit EOS at those lengths
(its cache is then narrower than ours, P + that length instead of P + cap). The second
reference is what a run does with `sampling.requests_per_slot = 1`: the engine on the same
batches with one slot per request and the cap of the run, each batch ending with its longest row.

  (a) demo: the tiny Llama of the demo (4 layers, hidden 128, vocab 512), 16 queries x 8
      samples, prompt 40 tokens, lengths uniform in [60, 70], cap 96; 32 slots.
  (b) SmolLM2-135M (embedded GGUF) on GSM-format prompts (the project's prompt format over
      GSM8K-style questions), --smollm-queries queries (default 4, cycling over 4 questions) x 8
      samples, lengths log-normal with median 150 (sigma 0.5, drawn with --length-seed), cut at
      the cap 320; 8 slots.
  (c) --shared-prefill: the rows of a CPU run's iteration (configs/real_cpu.py): SmolLM2-135M,
      8 synthetic shopping questions x 8 samples = 64 rows, one slot per row (R = S, a run's
      default), 96 new tokens, no EOS (every row runs all 96 steps, so both sides decode alike).
      Ours is `sampling.generate`: the engine with a slot per row (each prompt prefilled once,
      its K/V gathered into its 8 slots); the reference is the static sampler.

Beside the times it prints each side's decode steps, known from the lengths alone: a static batch
takes as many steps as its longest row; the engine gives a finished slot the next
request in request order, so its steps are those of that list schedule. Their ratio is the most
refilling can gain on that draw at equal cost per step; the time per step shows the rest (our
ring of `cap` decode columns is attended in full at every step, a static batch's cache is only as
wide as its longest row). With few requests per slot that ceiling depends much on the draw
(`--step-ratios 1000`: 32 requests through 8 slots 1.27-1.65 for 90 % of draws, mean 1.44; 64
requests mean 1.56; 128 requests mean 1.63).

Each figure is the best of --repeats runs (compiles excluded: each program is compiled first, on
one-token requests or without running it); the load
average is printed with the results (the machine is shared).

    python benchmarks/continuous.py [--quick] [--repeats 1] [--smollm-queries 4] [--length-seed 0] [--no-one-slot]
    python benchmarks/continuous.py --shared-prefill --repeats 2
    python benchmarks/continuous.py --step-ratios 1000   # the step ceiling over length draws, no model
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracles"))  # the static reference sampler

import jax  # noqa: E402
import numpy as np  # noqa: E402

import static_sampler  # noqa: E402
from bstar_jax import models, sampling  # noqa: E402
from bstar_jax.core.shapes import pow2_bucket  # noqa: E402
from bstar_jax.generate import engine  # noqa: E402
from bstar_jax.text.tokenizer import encode_prompts, load_tokenizer  # noqa: E402

GSM_QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
    "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]


def _workload(prompts_QxP, lens_Q, samples, lengths_R):
    Q = len(lens_Q)
    index_R = np.repeat(np.arange(Q), samples).astype(np.int32)
    return prompts_QxP, lens_Q, index_R, lengths_R.astype(np.int32)


def _ours(cfg, params, work, cap, slots, seed):
    prompts, lens, index, lengths = work
    out = engine.generate_requests(cfg, params, prompts, lens, jax.random.key(seed), prompt_index=index,
                                   request_max_new_tokens=lengths, slots=slots, max_new_tokens=cap,
                                   temperature=1.0, eos_id=-1)
    jax.block_until_ready(out)
    assert (np.asarray(out.lengths) == lengths).all()


def _static(cfg, params, work, slots, seed):
    prompts, lens, index, lengths = work
    for start in range(0, len(index), slots):
        rows = index[start:start + slots]
        out = static_sampler.generate(cfg, params, prompts[rows], lens[rows], jax.random.key(seed + start),
                                      max_new_tokens=int(lengths[start:start + slots].max()), temperature=1.0,
                                      eos_id=-1)
        jax.block_until_ready(out)


def _one_slot_per_row(cfg, params, work, cap, slots, seed):
    """What a run does with sampling.requests_per_slot = 1: the engine on batches of
    `slots` requests, one slot each, with the run's cap: a batch ends when its longest row ends."""
    prompts, lens, index, lengths = work
    for start in range(0, len(index), slots):
        rows = slice(start, start + slots)
        used, batch_index = np.unique(index[rows], return_inverse=True)  # a batch prefills its own prompts
        out = engine.generate_requests(cfg, params, prompts[used], lens[used], jax.random.key(seed + start),
                                       prompt_index=batch_index.astype(np.int32),
                                       request_max_new_tokens=lengths[rows],
                                       max_new_tokens=cap, temperature=1.0, eos_id=-1)
        jax.block_until_ready(out)


def _compile_static(cfg, work, slots):
    prompts, lens, index, lengths = work
    for start in range(0, len(index), slots):
        rows = index[start:start + slots]
        static_sampler.compiled_generate(cfg, None, pow2_bucket(len(rows)),
                                         pow2_bucket(int(lens[rows].max()), minimum=8),
                                         int(lengths[start:start + slots].max()), 0)


def decode_steps(lengths, slots: int) -> tuple[int, int]:
    """(static steps, continuous steps) of these response lengths through `slots` rows: static
    batches of `slots` consecutive requests, each as long as its longest row; continuous, each
    request taking the first slot to free up, in request order."""
    lengths = [int(n) for n in lengths]
    static = sum(max(lengths[i:i + slots]) for i in range(0, len(lengths), slots))
    free_at = [0] * min(slots, len(lengths))
    for n in lengths:
        heapq.heappush(free_at, heapq.heappop(free_at) + n)
    return static, max(free_at)


def smollm_lengths(n: int, seed: int, cap: int = 320) -> np.ndarray:
    """n response lengths of the SmolLM2 case: log-normal, median 150, sigma 0.5, cut at `cap`."""
    rng = np.random.default_rng(seed)
    return np.minimum(np.rint(150 * np.exp(0.5 * rng.standard_normal(n))), cap).clip(1)


def step_ratios(draws: int, slots: int = 8) -> None:
    """Prints static/continuous decode-step ratios over `draws` length draws (no model is run):
    what refilling can gain at equal cost per step, by requests per call."""
    for requests in (32, 64, 128):
        r = np.array([np.divide(*decode_steps(smollm_lengths(requests, seed), slots)) for seed in range(draws)])
        p5, p50, p95 = np.percentile(r, [5, 50, 95])
        print(f"{requests} requests through {slots} slots, {draws} draws: static/continuous steps mean "
              f"{r.mean():.2f}, median {p50:.2f}, 5-95 % {p5:.2f}-{p95:.2f}")


def _best(fn, repeats, warm):
    warm()  # compiles (the same programs, run on one-token requests or not run at all)
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        fn(r + 1)
        times.append(time.perf_counter() - t)
    return min(times)


def compare(name, cfg, params, work, cap, slots, repeats, lines, one_slot=True):
    useful = int(work[3].sum())
    short = work[:3] + (np.ones_like(work[3]),)
    ours_t = _best(lambda s: _ours(cfg, params, work, cap, slots, s), repeats,
                   lambda: _ours(cfg, params, short, cap, slots, 0))
    ref_t = _best(lambda s: _static(cfg, params, work, slots, s), repeats, lambda: _compile_static(cfg, work, slots))
    one_t = _best(lambda s: _one_slot_per_row(cfg, params, work, cap, slots, s), repeats,
                  lambda: _one_slot_per_row(cfg, params, short, cap, slots, 0)) if one_slot else None
    lengths = work[3]
    static_steps, our_steps = decode_steps(lengths, slots)
    print(f"[{name}] {len(lengths)} requests over {len(work[1])} prompts, {slots} slots, lengths "
          f"min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()} (cap {cap}), "
          f"{useful} useful tokens: ours {ours_t:.2f} s, static {ref_t:.2f} s"
          f"{f', one slot per row {one_t:.2f} s' if one_slot else ''}; load {os.getloadavg()[0]:.1f}")
    one = f", one slot per row {static_steps} ({1e3 * one_t / static_steps:.0f} ms/step)" if one_slot else ""
    print(f"[{name}] decode steps: ours {our_steps} ({1e3 * ours_t / our_steps:.0f} ms/step), static "
          f"{static_steps} ({1e3 * ref_t / static_steps:.0f} ms/step){one}; step ratio static/ours "
          f"{static_steps / our_steps:.2f}")
    lines.append(f"{name} useful tokens/s: ours {useful / ours_t:.0f} tok/s | reference (static sampler) "
                 f"{useful / ref_t:.0f} tok/s | ratio {ref_t / ours_t:.2f}")
    if one_slot:
        lines.append(f"{name} useful tokens/s: ours {useful / ours_t:.0f} tok/s | reference (one slot per row, "
                     f"requests_per_slot=1) {useful / one_t:.0f} tok/s | ratio {one_t / ours_t:.2f}")


def _prompt_rows(tokenizer, questions):
    """(prompt ids [Q, P] right-padded with 0, lengths [Q]) of the questions in the project's format."""
    ids = encode_prompts(tokenizer, questions)
    lens = np.array([len(p) for p in ids], np.int32)
    prompts = np.zeros((len(ids), lens.max()), np.int32)
    for q, p in enumerate(ids):
        prompts[q, :len(p)] = p
    return prompts, lens


def shared_prefill(repeats, lines, queries=8, samples=8, new_tokens=96):
    """Case (c): the same rows through ours (`sampling.generate`: a slot per row) and the static
    sampler, best of `repeats` each, interleaved; prints how many rows drew the same tokens on
    both sides."""
    from bstar_jax.data import load_split

    cfg, params = models.load("smollm2-135m")
    tokenizer = load_tokenizer("smollm2-135m")
    questions = [e.question for e in load_split("synthetic", "train", seed=0, n_train=queries, n_dev=0, n_test=0,
                                                difficulty=1)]
    prompts, lens = _prompt_rows(tokenizer, questions)
    rows, row_lens = np.repeat(prompts, samples, 0), np.repeat(lens, samples)
    kw = dict(max_new_tokens=new_tokens, temperature=1.0, eos_id=-1)
    ours = lambda: sampling.generate(cfg, params, rows, row_lens, jax.random.key(0), **kw)
    static = lambda: static_sampler.generate(cfg, params, rows, row_lens, jax.random.key(0), **kw)
    a, b = jax.block_until_ready(ours()), jax.block_until_ready(static())  # compiles
    # Same keys, same distribution; the two programs sum floats in other orders, so a draw that
    # lands in the far tail of the distribution (log-prob ~ -12) can pick a neighbouring token.
    same = int((np.asarray(a.tokens) == np.asarray(b.tokens)).all(axis=1).sum())
    times = {"ours": [], "static": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("static", static)):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    ours_t, static_t = min(times["ours"]), min(times["static"])
    tokens = len(rows) * new_tokens
    print(f"[shared prefill] {queries} prompts (length {lens.min()}-{lens.max()}) x {samples} samples, "
          f"{new_tokens} new tokens: ours {ours_t:.1f} s, static {static_t:.1f} s ({same}/{len(rows)} rows "
          f"with the same tokens); "
          f"load {os.getloadavg()[0]:.1f}")
    lines.append(f"shared prefill (SmolLM2-135M, {queries} x {samples} rows, {new_tokens} new tokens) tokens/s: ours "
                 f"{tokens / ours_t:.0f} tok/s | reference (static sampler) "
                 f"{tokens / static_t:.0f} tok/s | ratio {static_t / ours_t:.2f}")


def demo(repeats, lines):
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch

    torch.manual_seed(0)
    hf_cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    with tempfile.TemporaryDirectory() as tmp:
        LlamaForCausalLM(hf_cfg).save_pretrained(tmp, safe_serialization=True)
        cfg, params = models.load(tmp)
    rng = np.random.default_rng(0)
    Q, K = 16, 8
    prompts = rng.integers(3, 512, (Q, 40)).astype(np.int32)
    work = _workload(prompts, np.full((Q,), 40, np.int32), K, rng.integers(60, 71, Q * K))
    compare("demo (tiny Llama, lengths 60-70, cap 96)", cfg, params, work, 96, 32, repeats, lines)


def smollm(repeats, lines, queries=4, length_seed=0, one_slot=True):
    cfg, params = models.load("smollm2-135m")
    tokenizer = load_tokenizer("smollm2-135m")
    prompts, lens = _prompt_rows(tokenizer, [GSM_QUESTIONS[q % len(GSM_QUESTIONS)] for q in range(queries)])
    K, cap = 8, 320
    lengths = smollm_lengths(len(lens) * K, length_seed, cap)
    work = _workload(prompts, lens, K, lengths)
    compare("SmolLM2-135M GSM format (log-normal lengths, median 150, cap 320)", cfg, params, work, cap, 8,
            repeats, lines, one_slot)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip SmolLM2-135M")
    parser.add_argument("--only-smollm", action="store_true", help="skip the demo case")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smollm-queries", type=int, default=4, help="SmolLM2 queries (x 8 samples each)")
    parser.add_argument("--length-seed", type=int, default=0, help="seed of the SmolLM2 length draw")
    parser.add_argument("--no-one-slot", action="store_true", help="skip the one-slot-per-row reference")
    parser.add_argument("--shared-prefill", action="store_true", help="only case (c), a CPU run's sampling")
    parser.add_argument("--step-ratios", type=int, default=0, metavar="DRAWS",
                        help="only print decode-step ratios over this many SmolLM2 length draws")
    args = parser.parse_args()
    if args.step_ratios:
        return step_ratios(args.step_ratios)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    lines = []
    if args.shared_prefill:
        shared_prefill(args.repeats, lines)
    elif not args.only_smollm:
        demo(args.repeats, lines)
    if not (args.quick or args.shared_prefill):
        smollm(args.repeats, lines, args.smollm_queries, args.length_seed, not args.no_one_slot)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
