"""A stopped run loses at most one phase: SIGTERM or SIGKILL in a phase, then the same command
again, gives the metrics and the exported policy of an uninterrupted run (docs/errors.md#preemption).

Each run is `python run.py --config=configs/demo.py:tiny` (one B-STaR iteration, from a P_0
trained once here) in a subprocess; the signal comes from the test hook BSTAR_TEST_SIGNAL
(core/preemption.py), which sends it at a named safe point of a named phase.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bstar_jax.analysis import comparisons, runlog
from bstar_jax.bstar import experiment as loop
from bstar_jax.core import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ("--config=configs/demo.py:tiny", "--config.iterations=1", "--config.variants=('bstar',)",
        "--config.use_prm=(False,)", "--config.progress=False", "--config.search.include_reference=True",
        "--config.export.every_iteration=True")
TIMEOUT_S = 900  # one run of run.py, compiles included, on a busy 2-core machine
EXCLUDED = ("seconds", "sft_tokens_per_s")  # wall-clock figures


@pytest.fixture(scope="module")
def p0_dir(tmp_path_factory):
    """The tiny P_0 (iteration 0 evaluated), trained once and copied into each workdir."""
    from configs import demo

    work = tmp_path_factory.mktemp("p0")
    c = demo.get_config("tiny")
    c.workdir, c.progress, c.iterations, c.variants, c.use_prm = str(work), False, 0, ("bstar",), (False,)
    loop.run(c, mesh_lib.make_mesh())
    return work / "p0"


def _env(signal_at: str | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_", "BSTAR_TEST"))}
    env.update(HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", **extra)
    if signal_at:
        env["BSTAR_TEST_SIGNAL"] = signal_at
    return env


def _run(workdir, signal_at: str | None = None, devices: int = 1):
    """(return code, stderr, seconds) of one `python run.py`, as a user starts it (one device)."""
    start = time.monotonic()
    extra = {} if devices == 1 else {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    proc = subprocess.run([sys.executable, "run.py", *ARGS, f"--config.workdir={workdir}"], cwd=ROOT,
                          env=_env(signal_at, **extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=TIMEOUT_S)
    return proc.returncode, proc.stderr, time.monotonic() - start


def _run_two(workdir, signal_at: str | None = None):
    """(return codes, stderrs) of `python run.py` as 2 processes x 2 fake devices (docs/multihost.md);
    the signal goes to process 1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, logs = [], []
    for pid in range(2):
        env = _env(signal_at, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid),
                   BSTAR_TEST_SIGNAL_PROCESS="1")
        logs.append(open(workdir.parent / f"{workdir.name}.{pid}.log", "w+"))
        procs.append(subprocess.Popen([sys.executable, "run.py", *ARGS, f"--config.workdir={workdir}"], cwd=ROOT,
                                      env=env, stdout=subprocess.DEVNULL, stderr=logs[-1], text=True))
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = []
    for log in logs:
        log.seek(0)
        out.append(log.read())
    return [p.returncode for p in procs], out


def _workdir(tmp_path, name, p0_dir):
    import shutil

    shutil.copytree(p0_dir, tmp_path / name / "p0")
    return tmp_path / name


def _rows(workdir):
    return [{k: v for k, v in r.items() if k not in EXCLUDED} for r in runlog.read_metrics(str(workdir))]


@pytest.fixture(scope="module")
def straight(p0_dir, tmp_path_factory):
    work = _workdir(tmp_path_factory.mktemp("straight"), "w", p0_dir)
    rc, err, seconds = _run(work)
    assert rc == 0, err[-3000:]
    print(f"\nuninterrupted run: {seconds:.1f} s")
    return work


def _same_as(work, straight):
    assert _rows(work) == _rows(straight)
    for it in (0, 1):
        a, b = (comparisons.load_results(str(w), "bstar", it) for w in (work, straight))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), it
    from safetensors.numpy import load_file

    for leaf in ("final", "iteration_1"):
        a, b = (load_file(str(w / "policies" / "bstar" / leaf / "model.safetensors")) for w in (work, straight))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), leaf
    assert not (work / "phases" / "bstar" / "iteration_1").exists()  # dropped once the checkpoint was saved


@pytest.mark.slow
@pytest.mark.parametrize("signal_at, kept, redone", [
    ("bstar iteration 1: search#2:TERM", [], "search"),
    ("bstar iteration 1: sampling#2:KILL", ["search"], "sampling"),
    ("bstar iteration 1: SFT#3:TERM", ["pool", "search", "selection"], "SFT from step 2"),
], ids=["sigterm-search", "sigkill-sampling", "sigterm-sft"])
def test_a_stop_costs_at_most_the_phase_it_hit(tmp_path, p0_dir, straight, signal_at, kept, redone):
    work = _workdir(tmp_path, "stopped", p0_dir)
    rc, err, first = _run(work, signal_at)
    if signal_at.endswith("KILL"):
        assert rc == -signal.SIGKILL
    else:
        lines = [line for line in err.splitlines() if line.startswith("stopped at ")]
        assert rc == 143 and len(lines) == 1, err[-3000:]
        assert "rerun the same command to resume" in lines[0] and signal_at.split("#")[0] in lines[0]
    assert sorted(f.stem for f in (work / "phases" / "bstar" / "iteration_1").glob("*.npz")) == kept
    rc, err, second = _run(work)
    assert rc == 0, err[-3000:]
    if redone.startswith("SFT"):
        assert "bstar iteration 1: SFT resumes after step 2" in err, err[-3000:]
    _same_as(work, straight)
    print(f"\n{signal_at}: stopped after {first:.1f} s, resumed run {second:.1f} s (redone: {redone})")


@pytest.mark.slow
def test_two_processes_stop_at_the_same_safe_point_and_resume(tmp_path, p0_dir):
    """SIGTERM to process 1 in SFT: both processes stop at the same step (jax's preemption sync
    point), save, print one line each and exit 143; the same two commands resume and take every
    decision of an uninterrupted one-process run on the same 4-device mesh (floats to summation
    order; one device would be another mesh, whose last bits may turn a sample's length)."""
    reference = _workdir(tmp_path, "one", p0_dir)
    rc, err, _ = _run(reference, devices=4)
    assert rc == 0, err[-3000:]
    work = _workdir(tmp_path, "two", p0_dir)
    rcs, errs = _run_two(work, "bstar iteration 1: SFT#3:TERM")
    assert rcs == [143, 143], [e[-3000:] for e in errs]
    stops = [[line for line in e.splitlines() if line.startswith("stopped at ")] for e in errs]
    assert all(len(s) == 1 and "bstar iteration 1: SFT" in s[0] for s in stops), stops
    rcs, errs = _run_two(work)
    assert rcs == [0, 0], [e[-3000:] for e in errs]
    assert "SFT resumes after step" in errs[0]
    rows, ref = _rows(work), _rows(reference)
    floats = ("sft_loss", "diversity", "selected_diversity")
    assert [{k: v for k, v in r.items() if k not in floats} for r in rows] == \
        [{k: v for k, v in r.items() if k not in floats} for r in ref]
    for a, b in zip(rows, ref):
        for k in floats:
            if a.get(k) is not None:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)


def test_phase_files_round_trip(tmp_path):
    """The pool, with its texts, prompt ids and PRM scores, and a phase's meta, come back exactly."""
    from bstar_jax.bstar import phases, rollout
    from bstar_jax.generate.grid import GridSamples

    texts = np.array([[["a\n\n# Answer\n\n4", "", "ü  "], ["x", "y", "z"]]], dtype=object)
    zeros = np.zeros(texts.shape, np.int32)
    samples = GridSamples(temperatures=np.array([0.7], np.float32), texts=texts,
                          tokens=np.arange(18, dtype=np.int32).reshape(1, 2, 3, 3), lengths=zeros + 2,
                          truncated=zeros.astype(bool), logprobs=np.full((1, 2, 3, 3), -0.5, np.float32),
                          prompt_ids=[[5, 6, 7], [8]])
    pool = rollout.Pool(samples=samples, correct=zeros.astype(bool), valid=zeros == 0, text_id=zeros,
                        prm_min=np.full(texts.shape, 1.25, np.float32), reward=np.full(texts.shape, 0.25, np.float32))
    kept = phases.IterationPhases(tmp_path, "bstar+prm", 3, "abc")
    assert kept.finished() == []
    kept.save_pool(pool)
    kept.save(phases.SELECTION, {"selected": zeros == 0}, {"selection": [0.5, None, 1.0]})
    assert kept.finished() == ["pool", "selection"]
    back = kept.load_pool()
    assert back.samples.texts.tolist() == texts.tolist() and back.samples.prompt_ids == [[5, 6, 7], [8]]
    for name in ("correct", "valid", "text_id", "prm_min", "reward"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pool, name))
    assert kept.load(phases.SELECTION)[1] == {"selection": [0.5, None, 1.0]}
    assert phases.IterationPhases(tmp_path, "bstar+prm", 3, "changed").finished() == []  # another config's
    assert not (tmp_path / "phases" / "bstar_prm" / "iteration_3").exists()
    json.dumps(kept.digest)
