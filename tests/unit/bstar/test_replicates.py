"""config.replicate: replicate runs are named apart, draw their own training streams and share
P_0, the PRM and the evaluation draws; the run record takes a replicate into the same workdir."""
import json

import jax
import numpy as np
import pytest

from bstar_jax.bstar import experiment as loop
from bstar_jax.config import check as config_check, choices, record as run_record
from bstar_jax.core import streams as streams_lib
from configs import demo

TRAINING = ("search", "queries", "sample", "sft")


def test_run_names_round_trip():
    for variant in choices.VARIANTS:
        for use_prm in (False, True):
            for replicate in (0, 1, 12):
                name = choices.run_name(variant, use_prm, replicate)
                assert choices.parse_run_name(name) == (variant, use_prm, replicate)
    assert choices.run_name("online_rft", True, 1) == "online_rft-r1+prm"
    assert choices.run_name("bstar", False) == "bstar"
    with pytest.raises(ValueError, match="unknown variant"):
        choices.parse_run_name("bstar-r0")


def test_replicates_draw_their_own_training_keys_and_share_the_rest():
    """Every (variant, reward, replicate 0-2, iteration, training stream) has its own key, none of
    them an evaluation or one-off key; replicate 0 keeps the run numbers it always had."""
    s = streams_lib.Streams(0)
    keys = {}
    for variant in choices.VARIANTS:
        for use_prm in (False, True):
            for replicate in range(3):
                run = loop.run_index(variant, use_prm, replicate)
                for it in range(10):
                    for phase in TRAINING:
                        keys[(variant, use_prm, replicate, it, phase)] = s.key(phase, run=run, iteration=it)
    for it in range(10):
        keys[("eval", it)] = s.key("eval", iteration=it)
    for name in ("prm", "p0", "warm_start"):
        keys[name] = s.key(name)
    data = {tuple(np.asarray(jax.random.key_data(k)).ravel().tolist()) for k in keys.values()}
    assert len(data) == len(keys)
    assert [loop.run_index(v, False) for v in ("bstar", "online_rft", "iterative_rft", "rest_em")] == [0, 2, 4, 6]
    assert loop.run_index("online_rft", True, 1) == loop.REPLICATE_STRIDE + 3


def test_a_replicate_run_is_named_and_numbered_by_config_replicate(tmp_path):
    c = demo.get_config("tiny")
    c.workdir, c.replicate = str(tmp_path), 2
    r = loop.make_run(c, None, None, (None, None), None, streams_lib.Streams(0), "online_rft")
    assert r.name == "online_rft-r2" and r.index == loop.run_index("online_rft", False, 2)
    assert str(loop.checkpoint_dir(c, r.name)).endswith("checkpoints/online_rft-r2")


def test_replicate_and_primary_are_validated():
    c = demo.get_config("tiny")
    c.replicate = -1
    with pytest.raises(config_check.ConfigValueError, match="config.replicate=-1"):
        config_check.validate_fields(c, None)
    c.replicate, c.primary = 0, "bstar - nope"
    with pytest.raises(config_check.ConfigValueError, match="config.primary='bstar - nope': unknown variant"):
        config_check.validate_fields(c, None)


def test_a_replicate_joins_the_workdir_and_the_primary_stays_as_recorded(tmp_path):
    """replicate is neutral (it adds runs, changes none); primary is not (chosen before the run)."""
    c = demo.get_config("tiny")
    c.workdir = str(tmp_path)
    run_record.check_and_record(c)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"variant": "bstar", "iteration": 0}) + "\n")
    c.replicate = 1
    run_record.check_and_record(c)
    assert json.loads((tmp_path / run_record.FILENAME).read_text())["config"]["replicate"] == 1
    c.primary = "online_rft - P_0"
    with pytest.raises(run_record.ConfigChangedError, match="primary: 'bstar - online_rft' -> 'online_rft - P_0'"):
        run_record.check_and_record(c)
