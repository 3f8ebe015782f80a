"""Multi-process JAX on one machine: 2 processes x 2 fake CPU devices on 127.0.0.1 (gloo
collectives) give the results of one process on the same 4-device mesh, and a dead process
brings the other down with one line (docs/multihost.md).

Every subprocess has a hard timeout; the coordinator port is picked free at run time.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from bstar_jax.core import distributed, files
from bstar_jax.core.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multihost_worker.py")
sys.path.insert(0, HERE)
import multihost_worker  # noqa: E402

TIMEOUT_S = 600  # a whole two-process run, compiles included, on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, *args: str, stderr_dir) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid))
        env.pop("XLA_FLAGS", None)  # the worker sets 2 devices itself
        procs.append(subprocess.Popen([sys.executable, WORKER, mode, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=open(os.path.join(stderr_dir, f"stderr.{pid}"), "w"), text=True))
    return procs


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _stderr(tmp_path, pid) -> str:
    with open(tmp_path / f"stderr.{pid}") as f:
        return f.read()


# ----------------------------------------------------------------------------- launch settings

def test_launch_settings_from_environment():
    assert distributed.launch_settings({}) is None
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.launch_settings(env) == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                                                    process_id=3)
    for bad, field in [({"JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID"),
                       (dict(env, JAX_PROCESS_ID="4"), "JAX_PROCESS_ID"),
                       (dict(env, JAX_NUM_PROCESSES="two"), "JAX_NUM_PROCESSES"),
                       (dict(env, JAX_COORDINATOR_ADDRESS="10.0.0.1"), "host:port")]:
        with pytest.raises(UserError, match=field):
            distributed.launch_settings(bad)


def test_one_process_helpers(tmp_path, mesh8):
    from bstar_jax.core import mesh as mesh_lib

    x = np.arange(16.0).reshape(8, 2)
    g = distributed.put_global(x, mesh_lib.batch_sharding(mesh8, 2))
    assert g.sharding == mesh_lib.batch_sharding(mesh8, 2)
    np.testing.assert_array_equal(distributed.to_host({"g": g, "n": [1, 2]})["g"], x)
    assert distributed.is_writer()
    written = files.write_once(tmp_path / "a" / "f.txt", lambda p: (p.parent.mkdir(), p.write_text("hi")))
    assert written is not None and (tmp_path / "a" / "f.txt").read_text() == "hi"
    with files.one_writer("test") as writing:
        assert writing


# ----------------------------------------------------------------------------- two processes

@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, n_devices):
    """Sampler tokens, metrics and selections exactly; one SFT and one PRM step to float tolerance."""
    import jax

    from bstar_jax.core import mesh as mesh_lib

    procs = _launch("compute", str(tmp_path / "out"), stderr_dir=tmp_path)
    try:
        # The reference, on 4 of this process's 8 devices, while the workers compile.
        ref = multihost_worker.compute(mesh_lib.make_mesh(data=2, fsdp=2, tensor=1, devices=jax.devices()[:4]))
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        _stop(procs)
    for pid, p in enumerate(procs):
        assert p.returncode == 0, f"process {pid}: rc {p.returncode}\n{_stderr(tmp_path, pid)[-3000:]}"
    exact = ("key_data", "sample_tokens", "sample_lengths", "pass_at_k_s", "selected", "search_choice")
    for pid in range(2):
        got = dict(np.load(tmp_path / f"out.{pid}.npz"))
        assert sorted(got) == sorted(ref)
        for name in exact:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"process {pid}: {name}")
        for name in sorted(set(ref) - set(exact)):
            # Only the order of float sums across processes may differ.
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=f"process {pid}: {name}")


def test_decisions_are_the_writers_in_every_process(tmp_path):
    """@decided_on_writer: every process gets the writer's answer (a file it creates between two
    readings, its process index, its error); @gathered: every process gets every answer; a
    process reaching another decision than the writer stops with DivergedError."""
    import json

    procs = _launch("decide", str(tmp_path / "out"), stderr_dir=tmp_path)
    try:
        for p in procs:
            p.wait(timeout=120)
    finally:
        _stop(procs)
    for pid, p in enumerate(procs):
        assert p.returncode == 0, f"process {pid}: rc {p.returncode}\n{_stderr(tmp_path, pid)[-3000:]}"
    got = [json.loads((tmp_path / f"out.{pid}.json").read_text()) for pid in range(2)]
    for out in got:
        assert out["before"] is False and out["after"] is True
        assert out["whose"] == 0 and out["each"] == [10, 11]
        assert out["refused"] == "UserError: refused by process 0"
    assert got[0]["branch"] == "left"
    assert got[1]["branch"].startswith("DivergedError: process 1 reached decision") and "right" in got[1]["branch"]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["peer", "coordinator"])
def test_dead_process_stops_the_other(tmp_path, victim):
    """Killing one process ends the other within 60 s, with one line saying why (not a hang)."""
    procs = _launch("wait", stderr_dir=tmp_path)
    try:
        for pid, p in enumerate(procs):
            line = p.stdout.readline()  # "ready" once initialised; blocks at most until the worker exits
            assert line.strip() == "ready", f"process {pid} did not start:\n{_stderr(tmp_path, pid)[-3000:]}"
        time.sleep(2)  # both inside the collective loop
        procs[victim].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        survivor = procs[1 - victim]
        survivor.wait(timeout=90)
        took = time.monotonic() - killed
    finally:
        _stop(procs)
    assert survivor.returncode != 0
    assert took < 60, f"the survivor took {took:.0f} s to stop"
    err = _stderr(tmp_path, 1 - victim)
    if victim == 1:
        lines = [line for line in err.splitlines() if line.startswith("bstar-jax:")]
        assert len(lines) == 1 and "process 1 of 2 stopped" in lines[0], err[-3000:]
    else:
        # The coordinator's loss is detected by jax itself, at once (its fatal log, then abort).
        assert ("bstar-jax: the coordinator (process 0" in err
                or "Terminating process because the JAX distributed service detected fatal errors" in err), err[-3000:]


# ----------------------------------------------------------------------------- the demo, end to end

# configs/demo.py:tiny cut to one B-STaR iteration (search, selection, SFT, evaluation); the
# reference solution is a selection candidate, so SFT has examples even from a barely trained P_0.
DEMO_ARGS = ("--config=configs/demo.py:tiny", "--config.iterations=1", "--config.variants=('bstar',)",
             "--config.use_prm=(False,)", "--config.warm_start.steps=8", "--config.sft.steps_per_iteration=2",
             "--config.search.include_reference=True", "--config.progress=False", "--config.data.num_test=8",
             "--config.samples_per_query=2", "--config.search.samples_per_query=2", "--config.eval.samples_per_query=2",
             "--config.sampling.max_new_tokens=32")
DEMO_TIMEOUT_S = 900  # one run of run.py, compiles included, on a busy 2-core machine
ROOT = os.path.dirname(os.path.dirname(HERE))


def _run_py(workdir, *, devices: int, process_id: int | None = None, port: int | None = None, log) -> subprocess.Popen:
    """`python run.py` as a user starts it: only XLA_FLAGS / JAX_PLATFORMS and the three launch variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    if process_id is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    return subprocess.Popen([sys.executable, "run.py", *DEMO_ARGS, f"--config.workdir={workdir}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _wait_all(procs, logs):
    try:
        for p in procs:
            p.wait(timeout=DEMO_TIMEOUT_S)
    finally:
        _stop(procs)
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i}: rc {p.returncode}\n{open(log).read()[-3000:]}"


@pytest.mark.slow
def test_demo_two_processes_equal_one_process(tmp_path):
    """demo.py:tiny as 2 processes x 2 devices: one set of files on the shared workdir, written
    once; the same command again resumes from the checkpoints; then one process on 4 devices (the same data=4 mesh), from the two-process run's P_0,
    takes the same decisions, with floats to rtol 1e-4."""
    import json
    import shutil

    two, one = tmp_path / "two", tmp_path / "one"
    port = _free_port()
    logs = [str(tmp_path / f"two.{i}.log") for i in range(2)]
    _wait_all([_run_py(two, devices=2, process_id=i, port=port, log=open(logs[i], "w")) for i in range(2)], logs)
    # The same command again resumes from the checkpoints (every process restores) and changes nothing.
    before = (two / "metrics.jsonl").read_text()
    logs_again = [str(tmp_path / f"again.{i}.log") for i in range(2)]
    port = _free_port()
    _wait_all([_run_py(two, devices=2, process_id=i, port=port, log=open(logs_again[i], "w")) for i in range(2)],
              logs_again)
    assert "bstar: resuming after iteration 1" in open(logs_again[0]).read()
    assert (two / "metrics.jsonl").read_text() == before
    shutil.copytree(two / "p0", one / "p0")  # a from-scratch P_0 differs by float summation order
    log1 = str(tmp_path / "one.log")
    _wait_all([_run_py(one, devices=4, log=open(log1, "w"))], [log1])

    for name in ("metrics.jsonl", "report.md", "run_config.json", "p0/config.json"):
        assert (two / name).is_file(), name
    assert sorted(os.listdir(two / "checkpoints" / "bstar")) == ["0", "1"]
    assert not [f for f in os.listdir(two) if ".partial" in f or ".tmp" in f or ".write-test" in f]
    text = [open(log).read() for log in logs]
    assert "bstar iteration 1/1:" in text[0] and "bstar iteration 1/1:" not in text[1]  # INFO lines on the writer only
    rows = {w: [json.loads(line) for line in open(w / "metrics.jsonl")] for w in (two, one)}
    assert [r["iteration"] for r in rows[two]] == [0, 1]
    assert rows[two][1]["sft_loss"] is not None and rows[two][1]["n_selected"] > 0
    exact = ("iteration", "variant", "temperature", "threshold", "n_selected", "n_star", "pass_at_1", "pass_at_k",
             "pass_at_k_s", "train_accuracy", "train_valid", "eval_accuracy", "eval_truncated",
             "selection_precision", "selection_recall", "balance_score", "search_balance_score")
    for a, b in zip(rows[two], rows[one], strict=True):
        for k in exact:  # decisions and counts (as fractions of fixed totals)
            assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
        for k in ("sft_loss", "diversity"):  # float sums in another order
            if a.get(k) is not None:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)
