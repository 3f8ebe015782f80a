"""How long a stop takes, and what keeping each phase costs, on configs/demo.py:tiny.

A SIGTERM is honoured at the next safe point (core/preemption.py), so the worst wait in a phase
is its longest stretch between two safe points (one compiled call, the first one's compile
included), plus, in SFT, the save of the train state. This runs the loop once in this process,
records those stretches per phase (preemption.gaps) and times every phase save, then prints:

  - per phase: the worst time from a SIGTERM to the stop (and the same past the first iteration,
    when every call is compiled);
  - the share of an iteration's time spent keeping phase results (search, pool, selection,
    evaluation files and the SFT saves), and what one SFT save costs against one SFT step, the
    basis of sft.save_every's default.

With --signal it also stops a real `python run.py` subprocess at the first safe point of each
phase (BSTAR_TEST_SIGNAL) and prints the measured time from the signal to the exit.

    python benchmarks/preemption.py [--iterations 2] [--signal]
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _phase(place: str) -> str:
    return place.split(": ", 1)[1] if ": " in place else place


def _timed(owner, name, bucket):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def in_process(iterations: int) -> None:
    from bstar_jax.bstar import checkpoint, experiment as loop, phases
    from bstar_jax.core import mesh as mesh_lib, preemption
    from bstar_jax.train import trainer
    from configs import demo

    saves = collections.defaultdict(list)
    for name in ("save", "save_pool"):
        _timed(phases.IterationPhases, name, saves["phase files"])
    sft_saves, steps = saves["SFT saves"], []
    original_save = checkpoint.Checkpointer.save

    def checkpoint_save(self, iteration, state, **kw):
        start = time.perf_counter()
        try:
            return original_save(self, iteration, state, **kw)
        finally:
            if "/phases/" in self.directory:
                sft_saves.append(time.perf_counter() - start)

    checkpoint.Checkpointer.save = checkpoint_save
    original_fit = trainer.fit

    def fit(*args, **kw):
        state, summary = original_fit(*args, **kw)
        steps.append(summary["seconds"] / max(1, summary["steps"]))
        return state, summary

    trainer.fit = fit
    with tempfile.TemporaryDirectory() as work:
        c = demo.get_config("tiny")
        c.workdir, c.progress, c.iterations = work, False, iterations
        start = time.perf_counter()
        loop.run(c, mesh_lib.make_mesh())
        total = time.perf_counter() - start
        from bstar_jax.analysis import runlog

        iteration_s = [r["seconds"] for r in runlog.read_metrics(work) if r["iteration"] > 0]
    worst, later = collections.defaultdict(float), collections.defaultdict(float)
    for place, gap in preemption.gaps.items():
        worst[_phase(place)] = max(worst[_phase(place)], gap)
        m = re.search(r"iteration (\d+)", place)
        if m and int(m.group(1)) >= 2:
            later[_phase(place)] = max(later[_phase(place)], gap)
    save_s = max(sft_saves) if sft_saves else 0.0
    step_s = sorted(steps)[len(steps) // 2] if steps else float("nan")
    kept_s = sum(sum(v) for v in saves.values())
    print(f"whole run: {total:.1f} s, {len(iteration_s)} iterations of {sum(iteration_s):.1f} s in all")
    print(f"phase files: {sum(saves['phase files']):.2f} s over {len(saves['phase files'])} writes; "
          f"SFT saves: {sum(sft_saves):.2f} s over {len(sft_saves)} (longest {save_s:.2f} s); "
          f"median SFT step {step_s:.3f} s (first step's compile included in its phase)")
    for phase in sorted(worst):
        extra = save_s if phase == "SFT" else 0.0
        tail = f" | past iteration 1: {later[phase] + extra:.2f} s" if phase in later else ""
        print(f"worst SIGTERM-to-stop in {phase}: {worst[phase] + extra:.2f} s{tail}")
    print(f"keeping phase results: {kept_s:.2f} s of {sum(iteration_s):.1f} s of iterations "
          f"({100 * kept_s / max(1e-9, sum(iteration_s)):.1f} %)")
    if step_s == step_s and step_s > 0:
        n = max(1, round(20 * save_s / step_s))
        print(f"an SFT save every N steps costs save / (N x step) of SFT time: <= 5 % from N = {n}")


def with_signals() -> None:
    places = ["warm start P_0", "iteration 0: evaluation", "PRM phase", "iteration 1: search",
              "iteration 1: sampling", "iteration 1: SFT", "iteration 1: evaluation"]
    for place in places:
        with tempfile.TemporaryDirectory() as work:
            env = dict(os.environ, BSTAR_TEST_SIGNAL=f"{place}#1:TERM")
            env.pop("XLA_FLAGS", None)
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "run.py", "--config=configs/demo.py:tiny", "--config.iterations=1",
                                   "--config.progress=False", f"--config.workdir={work}",
                                   "--config.search.include_reference=True"],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            line = next((x for x in proc.stderr.splitlines() if x.startswith("stopped at")), "")
            m = re.search(r", ([\d.]+) s after SIGTERM", line)
            took = f"{float(m.group(1)):.2f} s" if m else f"no stop line (rc {proc.returncode})"
            print(f"SIGTERM at the start of {place}: stop {took} later, exit status {proc.returncode} "
                  f"({time.monotonic() - start:.0f} s run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--signal", action="store_true", help="also stop real runs with SIGTERM per phase")
    args = parser.parse_args()
    if args.signal:
        with_signals()
    in_process(args.iterations)


if __name__ == "__main__":
    main()
