"""Sandbox throughput: trivial programs graded by 10 standard-input tests each, on 2 workers.

Ours: bstar_jax.rewards.Sandbox (pre-forked workers, one forked child per test, every limit on).
Reference: a fresh interpreter per test (`subprocess.run([python, "-c", program])`, no sandbox at
all), on a smaller subset since it is slow; both sides on the same 2 worker threads/processes.

Overhead per program = wall x cores / programs minus the programs' own CPU time (the children's
rusage: user + system seconds of each test process, which includes the fork's copy-on-write
faults, the child's set-up and its exit). The median is over programs, each program's wall time
being the time its worker spent on it (workers never share a program). On a machine that other
jobs load, wall time stretches with the load; the CPU seconds of the grading process and the
workers (themselves, children excluded) per program are what that overhead would be on an idle
machine, and are printed too. The comparison line is total CPU per program, every process
counted (grading process, workers, test processes; for the reference, the interpreters).

    python benchmarks/sandbox.py            # 1,000 programs x 10 tests; reference on 40
    python benchmarks/sandbox.py --quick    # 100 programs, reference on 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bstar_jax.rewards.sandbox import Sandbox  # noqa: E402
from bstar_jax.rewards.unit_tests import stdout_matches  # noqa: E402

PROGRAMS = [  # trivial, right or wrong: the cost measured is the sandbox's, not the program's
    "a, b = map(int, input().split())\nprint(a + b)",
    "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)",
    "a, b = map(int, input().split())\nprint(a * b)",
    "print(sum(int(x) for x in input().split()))",
]


def workload(n):
    programs, tests = [], []
    for i in range(n):
        inputs = [f"{i + k} {2 * k}\n" for k in range(10)]
        programs.append(PROGRAMS[i % len(PROGRAMS)])
        tests.append({"inputs": inputs, "outputs": [f"{i + 3 * k}\n" for k in range(10)]})
    return programs, tests


def cpu_seconds(pid=None):
    """User + system CPU seconds of this process (pid None) or of `pid` itself, children excluded."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference(programs, tests, cores, timeout_s):
    """Fresh interpreter per test; returns (wall s, per-program (wall, cpu) pairs, passed counts)."""
    def one(i):
        start, cpu, passed = time.monotonic(), 0.0, 0
        for inp, out in zip(tests[i]["inputs"], tests[i]["outputs"]):
            before = os.times()
            r = subprocess.run([sys.executable, "-c", programs[i]], input=inp.encode(), capture_output=True,
                               timeout=timeout_s, env={"PATH": "/usr/bin:/bin"})
            after = os.times()
            cpu += (after.children_user - before.children_user) + (after.children_system - before.children_system)
            passed += r.returncode == 0 and stdout_matches(r.stdout.decode(), out)
        return time.monotonic() - start, cpu, passed
    start = time.monotonic()
    with ThreadPoolExecutor(cores) as pool:
        rows = list(pool.map(one, range(len(programs))))
    return time.monotonic() - start, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 programs (reference on 10)")
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--reference-programs", type=int, default=40)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=4.0)
    args = ap.parse_args()
    n, n_ref = (100, 10) if args.quick else (args.programs, args.reference_programs)
    programs, tests = workload(n)
    print(f"{os.cpu_count()} cores, {args.cores} workers; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    with Sandbox(workers=args.cores) as box:
        print("isolation:", ", ".join(k for k, v in box.isolation.items() if v is True))
        box.run(programs[:2 * args.cores], tests[:2 * args.cores], timeout_s=args.timeout)  # workers up
        pids = box.worker_pids()
        cpu0 = cpu_seconds() + sum(cpu_seconds(p) for p in pids)
        start = time.monotonic()
        results = box.run(programs, tests, timeout_s=args.timeout)
        wall = time.monotonic() - start
        assert box.worker_pids() == pids, "a worker was replaced during the run"
        sandbox_cpu = (cpu_seconds() + sum(cpu_seconds(p) for p in pids) - cpu0) / n
    passed = sum(r.passed for r in results)
    expect = 10 * sum(1 for i in range(n) if i % len(PROGRAMS) != 2)  # a * b is never i + 3k here
    cpu = [r.cpu_s for r in results]
    ours = statistics.median(r.wall_s - r.cpu_s for r in results) * 1000
    ours_mean = (wall * args.cores / n - statistics.mean(cpu)) * 1000
    ours_total = (sandbox_cpu + statistics.mean(cpu)) * 1000
    print(f"ours: {n} programs in {wall:.2f} s = {n / wall:.1f} programs/s; {passed} tests passed "
          f"({expect} expected); test processes' CPU {statistics.mean(cpu) * 1000:.1f} ms/program")
    print(f"ours: overhead per program (wall x cores / programs - test processes' CPU): mean {ours_mean:.1f} ms, "
          f"median {ours:.1f} ms; CPU of the grading process and workers {sandbox_cpu * 1000:.1f} ms/program")

    ref_wall, rows = reference(programs[:n_ref], tests[:n_ref], args.cores, args.timeout)
    ref = statistics.median(w - c for w, c, _ in rows) * 1000
    ref_total = statistics.mean(c for _, c, _ in rows) * 1000  # the threads' own CPU is negligible
    print(f"reference: {n_ref} programs in {ref_wall:.2f} s = {n_ref / ref_wall:.1f} programs/s; "
          f"{sum(p for _, _, p in rows)} tests passed (ours on the same: {sum(r.passed for r in results[:n_ref])}); "
          f"median wall - CPU {ref:.1f} ms per program")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"sandbox median overhead per program (10 stdin tests, {args.cores} cores, wall-based): ours {ours:.1f} ms")
    print(f"sandbox overhead CPU per program (grading process + workers, 10 stdin tests): ours {sandbox_cpu * 1000:.1f} ms")
    print(f"CPU per program, all processes (10 stdin tests): ours {ours_total:.1f} ms | "
          f"reference {ref_total:.1f} ms | ratio {ref_total / ours_total:.2f}")


if __name__ == "__main__":
    main()
