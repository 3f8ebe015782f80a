"""benchmarks/accelerator.py --quick runs end to end on the CPU: the GPU check stays runnable."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_the_accelerator_check_runs_quick_on_a_cpu():
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    res = subprocess.run([sys.executable, "benchmarks/accelerator.py", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    last = res.stdout.strip().splitlines()[-3:]
    assert last[0].startswith("decode tiny, batch 4") and "| ratio " in last[0], res.stdout[-2000:]
    assert last[1].startswith("SFT step tiny") and last[2].startswith("one iteration of configs/gsm8k.py:tiny")
