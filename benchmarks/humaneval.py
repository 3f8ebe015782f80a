"""Greedy pass@1 of a model on the converted HumanEval problems, graded in the sandbox.

The problems are the 137 of 164 whose asserts convert to call-based tests (docs/code.md#humaneval);
each prompt is the project's code prompt (`format.format_prompt` of the question: the
statement line, the HumanEval prompt, i.e. signature and docstring, in a ```python fence, and the
call-based instruction). Greedy decoding with the run's sampler (`generate.grid.sample` at T = 0), the
program read out of each response (`extract_program`) and graded by `code_reward.CodeGrader`:
pass@1 is the share of problems whose program passes every test. No published figure is printed
as a reference: the installed model's card carries none (docs/code.md#humaneval-baseline).

    python benchmarks/humaneval.py                                   # SmolLM2-135M-Instruct, 384 new tokens
    python benchmarks/humaneval.py --limit 8 --max_new_tokens 64    # a quick check
    python benchmarks/humaneval.py --out responses.jsonl            # keep every response and grade
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from bstar_jax import data, models  # noqa: E402
from bstar_jax.bstar import code_reward  # noqa: E402
from bstar_jax.core import mesh as mesh_lib  # noqa: E402
from bstar_jax.data.code_format import extract_program  # noqa: E402
from bstar_jax.generate import grid  # noqa: E402
from bstar_jax.text import tokenizer as tok  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="embedded alias, HF folder or .gguf")
    ap.add_argument("--max_new_tokens", type=int, default=384)
    ap.add_argument("--batch_rows", type=int, default=32, help="rows per sampler call (KV-cache memory)")
    ap.add_argument("--limit", type=int, default=None, help="the first N problems only")
    ap.add_argument("--workers", type=int, default=2, help="sandbox workers")
    ap.add_argument("--out", default="", help="a JSONL file for each problem's response and grade")
    args = ap.parse_args()

    examples = data.load_split("humaneval", "test", limit=args.limit)
    mesh = mesh_lib.make_mesh(data=-1, fsdp=1, tensor=1)
    tokenizer = tok.load_tokenizer(args.model)
    cfg, params = models.load(args.model, mesh=mesh, param_dtype="float32", dtype="float32")
    if cfg.eos_token_id is None and tokenizer.eos_token_id is not None:
        cfg = cfg.replace(eos_token_id=int(tokenizer.eos_token_id))
    sampling = ml_collections.ConfigDict(dict(max_new_tokens=args.max_new_tokens, top_p=1.0, top_k=0,
                                              batch_rows=args.batch_rows, requests_per_slot=1))
    start = time.perf_counter()
    samples = grid.sample((cfg, params), tokenizer, [e.question for e in examples], temperatures=[0.0],
                             num_samples=1, rng=jax.random.key(0), sampling_config=sampling, mesh=mesh)
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    with code_reward.CodeGrader(workers=args.workers) as grader:
        grades = grader.grade(samples.texts, [e.tests for e in examples])
    grade_s = time.perf_counter() - start
    correct, valid = grades.correct[0, :, 0], grades.valid[0, :, 0]
    if args.out:
        with open(args.out, "w") as f:
            for q, e in enumerate(examples):
                text = samples.texts[0, q, 0]
                f.write(json.dumps(dict(id=e.id, response=text, program=extract_program(text),
                                        passed=bool(correct[q]), test_pass_fraction=float(grades.pass_fraction[0, q, 0]),
                                        truncated=bool(samples.truncated[0, q, 0]))) + "\n")
    n = len(examples)
    print(f"{n} problems: sampled in {sample_s:.0f} s ({int(samples.lengths.sum())} tokens), graded in {grade_s:.0f} s; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"program extracted {valid.mean():.3f}, truncated at {args.max_new_tokens} tokens "
          f"{samples.truncated.mean():.3f}, tests passed {grades.pass_fraction.mean():.3f} (mean over problems)")
    print(f"greedy pass@1, {args.model}, HumanEval ({n} converted problems, {args.max_new_tokens} new tokens): "
          f"{int(correct.sum())}/{n} = {float(np.mean(correct)):.3f}")


if __name__ == "__main__":
    main()
