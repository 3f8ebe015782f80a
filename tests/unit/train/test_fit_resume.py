"""trainer.fit stops at a safe point and resumes exactly: the SFT phase of a preempted run."""
import jax
import numpy as np
import pytest

from bstar_jax.core import mesh as mesh_lib, preemption
from bstar_jax.train import sft, trainer
from tiny_sft import CFG, examples, tiny_config


@pytest.fixture(scope="module")
def setup():
    from bstar_jax import models

    mesh = mesh_lib.make_mesh(data=2, fsdp=1, tensor=1, devices=jax.devices()[:2])
    return mesh, models.init(CFG, 0), tiny_config(steps_per_iteration=6)


def _run(setup, **kw):
    mesh, params, c = setup
    state = sft.init_train_state(CFG, params, c, mesh)
    return sft.run_sft(state, examples(24, seed=3), CFG, c, mesh, jax.random.key(7), **kw)


def _flat(state):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(jax.device_get(state.params))])


def test_saves_every_n_steps_and_a_resume_equals_one_run(setup):
    whole, summary = _run(setup)
    saved = []

    def save(st, progress):  # a copy on the host: the state is donated to the next step
        saved.append((jax.device_get(st), jax.tree.map(lambda x: x.sharding, st),
                      trainer.Progress.from_json(progress.to_json())))

    _run(setup, save=save, save_every=2)
    assert [p.step for _, _, p in saved] == [2, 4]  # not after the last step: the caller keeps the result
    host, shardings, progress = saved[0]
    mesh, _, c = setup
    resumed, again = sft.run_sft(jax.device_put(host, shardings), examples(24, seed=3), CFG, c, mesh,
                                 jax.random.key(7), resume=progress)
    np.testing.assert_array_equal(_flat(resumed), _flat(whole))
    assert again["loss"] == summary["loss"] and again["grad_norm"] == summary["grad_norm"]
    assert again["tokens"] == summary["tokens"] and again["lr"] == summary["lr"]


def test_a_stop_saves_then_raises_preempted(setup, monkeypatch):
    calls = iter(range(100))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 2)  # asked during the third step
    saved = []
    with pytest.raises(preemption.Preempted):
        _run(setup, save=lambda st, p: saved.append(p.step))
    assert saved == [3]
