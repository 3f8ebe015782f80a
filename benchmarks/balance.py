"""The (T, τ) balance search: array code (balance.search) vs the plain-Python reference.

The search runs on a random dev pool of 600 queries x 64 samples per temperature (the paper's
dev subset size and sample count, configs/gsm8k.py) over the main grid 8 T x 21 τ and the fine
grid 15 T x 200 τ (paper §4 and App. D; docs/algorithm.md#grids-and-defaults); one selection +
balance score runs on the iteration's pool, 2048 queries x 32 samples (configs/gsm8k.py).
Ours is timed after compilation (median of repeated calls, host conversion included); the
reference (tests/oracles/balance_reference.py, plain Python) once. Both must choose the same
configuration and give the same table.

    python benchmarks/balance.py [--queries 600] [--samples 64] [--pool-queries 2048]
                                 [--pool-samples 32] [--repeats 20] [--devices 1]
                                 [--skip-fine-reference]

--devices N splits the CPU into N XLA devices, so the query axis is sharded over N cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def random_pool(rng, temperatures, num_queries, num_samples):
    """[T, Q, K] correct/reward/valid/text_id: harder queries are less often right, higher T
    gives fewer repeated texts, reward = 1[correct] + PRM/5 with an overlapping PRM (Eq. 2)."""
    shape = (len(temperatures), num_queries, num_samples)
    ease_Q = rng.beta(0.5, 2.0, num_queries)
    temp_T = np.asarray(temperatures)[:, None, None]
    correct = rng.random(shape) < np.clip(ease_Q[None, :, None] * (1.3 - 0.4 * temp_T), 0, 1)
    distinct_texts = np.maximum(2, (num_samples * temp_T / 1.2).astype(int))
    text_id = (rng.random(shape) * distinct_texts).astype(np.int32) * 2 + correct  # same text, same answer
    prm = np.clip(rng.normal(np.where(correct, 1.0, -1.0), 2.5), -5, 5)
    reward = (correct + np.round(prm, 1) / 5.0).astype(np.float32)
    valid = rng.random(shape) < 0.95
    return correct, reward, valid, text_id


def time_ours(fn, repeats):
    """Median wall and CPU seconds of `fn` after one compiling call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def time_once(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def comparison(what, ours, ref):
    """Wall time, then CPU time (steadier on a shared machine): two result lines."""
    return [f"{what}: ours {ours[0] * 1e3:.2f} ms | reference {ref[0] * 1e3:.0f} ms | ratio {ref[0] / ours[0]:.0f}",
            f"{what}, CPU time: ours {ours[1] * 1e3:.2f} ms | reference {ref[1] * 1e3:.0f} ms | "
            f"ratio {ref[1] / ours[1]:.0f}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--pool-queries", type=int, default=2048)
    parser.add_argument("--pool-samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--skip-fine-reference", action="store_true")
    args = parser.parse_args()
    if args.devices > 1:  # before jax is imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax
    from bstar_jax.bstar import balance, metrics
    from balance_reference import reference_balance_score, reference_search, reference_select

    rng = np.random.default_rng(0)
    target_size = int(round(args.queries * 3550 / 600))  # the official dev target (docs/algorithm.md#search)
    grids = {
        "search 8 T x 21 tau": (np.round(np.arange(0.5, 1.25, 0.1), 2), np.round(np.arange(-1.0, 1.05, 0.1), 2)),
        "search 15 T x 200 tau": (np.round(np.arange(0.5, 1.225, 0.05), 2), np.round(np.arange(-1.0, 0.995, 0.01), 2)),
    }
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; pool {args.queries} queries x "
          f"{args.samples} samples; target_size {target_size}")
    lines = []
    for what, (temperatures, thresholds) in grids.items():
        pool = random_pool(rng, temperatures, args.queries, args.samples)
        kwargs = dict(target_size=target_size, mode="paper")
        ours = time_ours(lambda: balance.search(*pool, temperatures, thresholds, **kwargs), args.repeats)
        result = balance.search(*pool, temperatures, thresholds, **kwargs)
        print(f"{what}: chose T={result.temperature} tau={result.threshold} BS={result.balance_score:.4f}")
        if what.startswith("search 15") and args.skip_fine_reference:
            continue
        ref_time, ref = time_once(lambda: reference_search(*pool, temperatures, thresholds, **kwargs))
        agree = (ref[0], ref[1]) == (result.temperature, result.threshold) and np.allclose(
            np.asarray(ref[3]), result.balance_score_TxU, rtol=0, atol=1e-12)
        print(f"{what}: reference chose T={ref[0]} tau={ref[1]}; same choice and table: {agree}")
        if not agree:
            raise SystemExit(f"{what}: the array search and the reference disagree")
        lines += comparison(f"{what} ({args.queries}x{args.samples})", ours, ref_time)

    # one selection + balance score (what the loop does once per iteration on its pool)
    correct, reward, valid, text_id = (x[0] for x in random_pool(rng, [1.0], args.pool_queries, args.pool_samples))
    pool_target = 12_000 * args.pool_queries // 2048  # configs/gsm8k.py: N = 12000 of M = 2048

    def ours_select_score():
        selected = balance.select(reward, valid, -0.1, pool_target, text_id)
        return metrics.balance_score(correct, selected, text_id, 6)

    ours = time_ours(ours_select_score, args.repeats)
    ref_time, ref = time_once(lambda: reference_balance_score(
        correct, reference_select(reward, valid, -0.1, pool_target, text_id), text_id, 6))
    assert abs(ref - ours_select_score()) < 1e-12
    lines += comparison(f"select + balance_score ({args.pool_queries}x{args.pool_samples})", ours, ref_time)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
