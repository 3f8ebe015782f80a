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

from bstar_jax import distributed
from bstar_jax.errors import UserError

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
    from bstar_jax import mesh as mesh_lib

    x = np.arange(16.0).reshape(8, 2)
    g = distributed.put_global(x, mesh_lib.batch_sharding(mesh8, 2))
    assert g.sharding == mesh_lib.batch_sharding(mesh8, 2)
    np.testing.assert_array_equal(distributed.to_host({"g": g, "n": [1, 2]})["g"], x)
    assert distributed.is_writer()
    written = distributed.write_once(tmp_path / "a" / "f.txt", lambda p: (p.parent.mkdir(), p.write_text("hi")))
    assert written is not None and (tmp_path / "a" / "f.txt").read_text() == "hi"
    with distributed.one_writer("test") as writing:
        assert writing


# ----------------------------------------------------------------------------- two processes

@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, n_devices):
    """Sampler tokens, metrics and selections exactly; one SFT and one PRM step to float tolerance."""
    import jax

    from bstar_jax import mesh as mesh_lib

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
