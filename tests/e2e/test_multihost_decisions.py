"""Two processes take every decision of one, on a P_0 that selects its own samples, PRM included.

`python run.py --config=configs/demo.py:tiny` cut to one B-STaR iteration with the PRM (the PRM
phase: sampling, Math-Shepherd labelling, training; then search, selection, SFT, evaluation),
first as one process on 4 fake CPU devices, which trains P_0, then as 2 processes x 2 devices
started with only JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, from that P_0.
Every decision (chosen T and τ, counts, Pass@k, balance scores) must be equal; floats computed
by sums in another order (SFT loss, diversity) to rtol 1e-4. Hard timeouts on every process.

`python tests/e2e/multihost_repeat.py --times 5` runs this test 5 times in a row (docs/multihost.md).
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A P_0 warm-started long enough that its own samples are selected (no reference candidate).
ARGS = ("--config=configs/demo.py:tiny", "--config.seed=5", "--config.iterations=1", "--config.variants=('bstar',)",
        "--config.use_prm=(True,)", "--config.progress=False", "--config.warm_start.steps=300",
        "--config.warm_start.lr=0.01", "--config.queries_per_iteration=32")
TIMEOUT_S = 900  # one run of run.py, compiles included, on a busy 2-core machine
EXACT = ("iteration", "variant", "temperature", "threshold", "n_selected", "n_star", "pass_at_1", "pass_at_k",
         "pass_at_k_s", "reward_at_k_s", "reward_at_k_s_prm", "train_accuracy", "train_valid", "eval_accuracy",
         "eval_truncated", "selection_precision", "selection_recall", "balance_score", "search_balance_score")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, log, *, devices: int, process_id: int | None = None, port: int | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_", "BSTAR_TEST"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               HF_HUB_OFFLINE="1")
    if process_id is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    return subprocess.Popen([sys.executable, "run.py", *ARGS, f"--config.workdir={workdir}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _finish(procs, logs):
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i}: rc {p.returncode}\n{open(log).read()[-4000:]}"


@pytest.mark.slow
def test_two_processes_decide_as_one_on_a_selecting_p0_with_the_prm(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    log1 = str(tmp_path / "one.log")
    _finish([_start(one, open(log1, "w"), devices=4)], [log1])
    shutil.copytree(one / "p0", two / "p0")  # a from-scratch P_0 differs by float summation order
    port = _free_port()
    logs = [str(tmp_path / f"two.{i}.log") for i in range(2)]
    _finish([_start(two, open(logs[i], "w"), devices=2, process_id=i, port=port) for i in range(2)], logs)

    rows = {w: [json.loads(line) for line in open(w / "metrics.jsonl")] for w in (one, two)}
    assert [r["iteration"] for r in rows[two]] == [0, 1] and rows[two][1]["variant"] == "bstar+prm"
    assert rows[one][1]["n_selected"] > 0 and rows[one][1]["sft_loss"] is not None  # its own samples, trained on
    for a, b in zip(rows[two], rows[one], strict=True):
        for k in EXACT:
            assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
        for k in ("sft_loss", "diversity", "selected_diversity"):
            if a.get(k) is not None:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)
    # The PRM phase ran in both (trained, saved by orbax in every process) and left one copy.
    assert (two / "prm").is_dir() and "PRM: " in open(logs[0]).read()
    assert not [f for f in os.listdir(two) if ".partial" in f or ".write-test" in f]
    text = [open(log).read() for log in logs]
    assert not any("DivergedError" in t or "mismatch" in t for t in text)
