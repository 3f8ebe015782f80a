"""Runs the two-process decision test several times in a row and counts passes and failures.

    python tests/e2e/multihost_repeat.py --times 5

A divergence between processes is intermittent (it depends on which process reads shared
storage first), so one pass proves little; this repeats
tests/e2e/test_multihost_decisions.py, each time in a fresh pytest process, prints one line per
attempt and the counts last, and exits 1 if any attempt failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEST = "tests/e2e/test_multihost_decisions.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=5, help="attempts (default 5)")
    parser.add_argument("--test", default=TEST, help=f"the pytest node to repeat (default {TEST})")
    args = parser.parse_args()
    passed = failed = 0
    for attempt in range(1, args.times + 1):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", args.test],
                              cwd=ROOT, capture_output=True, text=True)
        ok = proc.returncode == 0
        passed, failed = passed + ok, failed + (not ok)
        print(f"attempt {attempt}: {'pass' if ok else 'FAIL'} ({time.monotonic() - start:.0f} s)", flush=True)
        if not ok:
            print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    print(f"two-process decisions: {passed} passed, {failed} failed of {args.times}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
