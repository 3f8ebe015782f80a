"""End-to-end runs of the loop on the tiny demo config: every variant, PRM, resume, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bstar_jax.analysis import comparisons, report, runlog
from bstar_jax.config import check as config_check
from bstar_jax.bstar import experiment as loop
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.streams import Streams
from configs import demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(workdir, **overrides):
    c = demo.get_config("tiny")
    c.workdir = str(workdir)
    c.progress = False
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


@pytest.fixture(scope="module")
def p0_dir(tmp_path_factory):
    """The tiny warm start P_0, trained once and copied into each test's workdir."""
    work = tmp_path_factory.mktemp("p0")
    c = tiny(work, iterations=0, variants=("online_rft",), use_prm=(False,))
    loop.run(c, mesh_lib.make_mesh())
    return work / "p0"


def with_p0(tmp_path, p0_dir):
    shutil.copytree(p0_dir, tmp_path / "p0")
    return tmp_path


def rows_of(workdir):
    return runlog.read_metrics(str(workdir))


def test_p0_is_a_working_warm_start(p0_dir):
    rows = rows_of(p0_dir.parent)
    assert rows and rows[0]["iteration"] == 0
    # The tiny P_0 must answer in the response format (else nothing could ever be selected).
    assert rows[0]["eval_truncated"] < 0.5


def test_p0_sft_fine_tunes_a_loaded_model_once(tmp_path, p0_dir):
    """p0_sft: a loaded HF folder is fine-tuned on reference solutions and cached as <workdir>/p0."""
    import jax
    import numpy as np

    from bstar_jax import data, models
    from bstar_jax.bstar import policy as warmstart

    c = tiny(tmp_path / "work")
    c.warm_start.enabled = False
    c.model.path = str(p0_dir)
    c.p0_sft.steps, c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 3, 8, 8, 1e-3
    mesh = mesh_lib.make_mesh()
    train = data.load_splits(c.data, Streams(c.seed))["train"]
    _, tokenizer, (cfg, params) = warmstart.load_policy(c, mesh, train)
    saved = tmp_path / "work" / "p0"
    assert (saved / "config.json").exists() and (saved / "tokenizer.json").exists()
    assert tokenizer.eos_token_id == cfg.eos_token_id
    _, base = models.load(str(p0_dir))
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(t)])
    assert not np.allclose(flat(base), flat(params))  # trained
    stamp = os.path.getmtime(saved / "config.json")
    _, _, (_, again) = warmstart.load_policy(c, mesh, train)  # cached: loaded, not retrained
    assert os.path.getmtime(saved / "config.json") == stamp
    np.testing.assert_allclose(flat(again), flat(params), atol=1e-6)


def test_sizes_are_resolved_once_before_p0(tmp_path, p0_dir, monkeypatch):
    """With sizes from device memory, load_policy resolves them once, before P_0's fine-tune, which
    trains with the resolved micro-batch; the loop gets that same resolved config."""
    from bstar_jax import data
    from bstar_jax.bstar import policy
    from bstar_jax.config import sizing
    from bstar_jax.train import sft

    c = tiny(tmp_path / "work")
    c.warm_start.enabled, c.model.path = False, str(p0_dir)
    c.p0_sft.steps, c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 2, 16, 16, 1e-3
    c.sft.hbm_fraction, c.device_memory_gb = 0.5, 0.045  # 24 MB a device: room for one 12.6 MB row, not two
    calls, trained = [], []
    resolve, run_sft = sizing.resolve_sizes, sft.run_sft
    monkeypatch.setattr(sizing, "resolve_sizes", lambda *a, **k: calls.append(1) or resolve(*a, **k))
    monkeypatch.setattr(sft, "run_sft", lambda state, examples, cfg, sft_config, *a, **k:
                        trained.append(int(sft_config.micro_batch_size)) or run_sft(state, examples, cfg, sft_config,
                                                                                     *a, **k))
    mesh = mesh_lib.make_mesh()
    sized, _, _ = policy.load_policy(c, mesh, data.load_splits(c.data, Streams(c.seed))["train"])
    assert calls == [1] and trained == [sized.p0_sft.micro_batch_size]
    assert sized.p0_sft.micro_batch_size < 16 and 16 % sized.p0_sft.micro_batch_size == 0


@pytest.mark.slow
def test_bstar_and_online_rft_with_and_without_prm(tmp_path, p0_dir):
    work = with_p0(tmp_path, p0_dir)
    path = loop.run(tiny(work, **{"export.every_iteration": True}), mesh_lib.make_mesh())
    rows = rows_of(work)
    c = tiny(work)
    runs = {"bstar", "online_rft", "bstar+prm", "online_rft+prm"}
    assert {r["variant"] for r in rows} == runs
    for name in runs:
        its = [r["iteration"] for r in rows if r["variant"] == name]
        assert its == list(range(c.iterations + 1)), name
    for r in rows:
        missing = [k for k in runlog.REQUIRED_KEYS if k not in r]
        assert not missing, (r["variant"], r["iteration"], missing)
        if r["iteration"] > 0:
            assert r["temperature"] is not None and r["threshold"] is not None
            assert 0.0 <= r["balance_score"] <= 1.0
    # Common random numbers: every run evaluates P_0 with the same key, so iteration 0 agrees.
    p0_rows = [r for r in rows if r["iteration"] == 0]
    for key in ("pass_at_1", "pass_at_k", "pass_at_k_s", "diversity"):
        assert all(r[key] == p0_rows[0][key] for r in p0_rows), key
    # B-STaR searched: its chosen T comes from the grid and a heat-map table was stored.
    for r in (r for r in rows if r["variant"].startswith("bstar") and r["iteration"] > 0):
        assert r["temperature"] in c.search.temperatures and r["threshold"] in c.search.thresholds
    assert os.listdir(work / "searches")
    # The PRM variant trained a head and ranks with it: PRM-only Reward@K-S is logged.
    assert (work / "prm").is_dir()
    assert all("reward_at_k_s_prm" in r for r in rows if r["variant"].endswith("+prm"))
    assert all("reward_at_k_s_prm" not in r for r in rows if not r["variant"].endswith("+prm"))
    # Something was selected and trained on in at least one iteration.
    assert any(r["n_selected"] > 0 and r["sft_loss"] is not None for r in rows)
    text = open(path).read()
    for name in runs:
        assert f"## {name}" in text
    for png in ("pass_at_1.png", "balance_score.png", "temperature.png", "balance_heatmap.png"):
        assert (work / "plots" / png).exists(), png
    # Per-problem results of every evaluation, consistent with the logged means.
    for r in rows:
        kept = comparisons.load_results(str(work), r["variant"], r["iteration"])
        assert kept is not None and kept["problem_id"].shape == (c.data.num_test,)
        assert kept["greedy_correct"].mean() == pytest.approx(r["pass_at_1"])
        assert int(kept["num_samples"]) == c.eval.samples_per_query
        assert (kept["sample_correct"] / c.eval.samples_per_query).mean() == pytest.approx(r["eval_accuracy"])
    # Exported policies: final and every iteration's, one folder each.
    for name in runs:
        assert sorted(os.listdir(work / "policies" / name)) == ["final", "iteration_1", "iteration_2"]
    assert not list((work / "policies").glob("*/*.partial"))
    check_exported_policy(work / "policies" / "bstar" / "final", work)
    table = report.summarize_seeds([str(work)])
    assert "| bstar − online_rft | greedy Pass@1 |" in table and "| online_rft+prm − P_0+prm | Pass@K |" in table


def check_exported_policy(folder, work):
    """transformers (torch) loads the exported folder and its tokenizer; its logits equal ours."""
    import numpy as np
    import torch
    import transformers

    from bstar_jax import data, models
    from bstar_jax.text import tokenizer as tok
    from bstar_jax.text import format as fmt

    cfg, params = models.load(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    theirs_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours_tokenizer = tok.load_tokenizer(str(work / "p0"))
    questions = [e.question for e in data.load_splits(tiny(work).data, Streams(0))["test"][:3]]
    for q, ids in zip(questions, tok.encode_prompts(ours_tokenizer, questions)):
        prompt = fmt.format_prompt(q)
        assert theirs_tokenizer(prompt, add_special_tokens=False)["input_ids"] == \
            ours_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            theirs = model(torch.tensor([ids])).logits[0].numpy()
        ours = np.asarray(models.forward(cfg, params, np.asarray([ids], np.int32))[0])
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["iterative_rft", "rest_em"])
def test_other_variants(variant, tmp_path, p0_dir):
    work = with_p0(tmp_path, p0_dir)
    loop.run(tiny(work, variants=(variant,), use_prm=(False,), iterations=1), mesh_lib.make_mesh())
    rows = rows_of(work)
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["variant"] == variant


def test_runs_and_experiments_in_one_process_share_no_state(tmp_path, p0_dir):
    """Two runs in one experiment, then two more experiments in the same process, each one of
    those runs alone: every run's rows are the rows it has alone (the second run of the first
    experiment reuses the first one's evaluation of P_0, which equals its own)."""
    def rows(name, variants):
        work = with_p0(tmp_path / name, p0_dir)
        loop.run(tiny(work, variants=variants, use_prm=(False,), iterations=1), mesh_lib.make_mesh())
        return [{k: v for k, v in r.items() if k not in ("seconds", "sft_tokens_per_s")} for r in rows_of(work)]

    both = rows("both", ("online_rft", "rest_em"))
    alone = rows("rest_em", ("rest_em",)) + rows("online_rft", ("online_rft",))
    assert [(r["variant"], r["iteration"]) for r in both] == [(v, i) for v in ("online_rft", "rest_em") for i in (0, 1)]
    assert sorted(both, key=lambda r: r["variant"]) == sorted(alone, key=lambda r: r["variant"])


def test_eval_every_skips_the_test_pass_between_p0_and_the_last_iteration(tmp_path, p0_dir):
    work = with_p0(tmp_path, p0_dir)
    loop.run(tiny(work, variants=("online_rft",), use_prm=(False,), iterations=2, **{"eval.every": 5}),
             mesh_lib.make_mesh())
    rows = rows_of(work)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[1]["pass_at_1"] is None and rows[1]["pass_at_k_s"] is None and rows[1]["n_selected"] > 0
    assert rows[0]["pass_at_1"] is not None and rows[2]["pass_at_1"] is not None
    assert set(rows[1]) == set(rows[2])  # evaluation.TEST_METRICS names every key a test pass writes
    assert sorted(os.listdir(work / "eval" / "online_rft")) == ["iteration_0.npz", "iteration_2.npz"]
    summary = report.summarize_seeds([str(work)])  # tables and paired rows read only evaluated iterations
    assert "| online_rft | " in summary and "online_rft − P_0" in summary


def test_greedy_only_evaluation_measures_the_same_pass_at_1_at_half_the_samples(tmp_path, p0_dir):
    """eval.samples_per_query = 0: greedy Pass@1 equals a full evaluation's (same key), every
    sampled metric is None, and the paired comparison covers greedy Pass@1 only."""
    work = with_p0(tmp_path, p0_dir)
    loop.run(tiny(work, variants=("online_rft",), use_prm=(False,), iterations=1, **{"eval.samples_per_query": 0}),
             mesh_lib.make_mesh())
    rows, full = rows_of(work), rows_of(p0_dir.parent)
    assert rows[0]["pass_at_1"] == full[0]["pass_at_1"]
    assert all(rows[i][k] is None for i in (0, 1) for k in ("pass_at_k", "pass_at_k_s", "diversity"))
    assert rows[1]["pass_at_1"] is not None and set(rows[0]) == set(full[0])
    summary = report.summarize_seeds([str(work)])
    assert "| online_rft − P_0 | greedy Pass@1 |" in summary and "| online_rft − P_0 | Pass@K |" not in summary
    assert "| run | greedy Pass@1 |" in summary  # the unmeasured columns are left out


# ----------------------------------------------------------------------------- random streams


def test_every_draw_of_every_run_has_its_own_key():
    """Every variant x with/without PRM, 9 iterations, every phase, plus evaluation and the
    one-off streams: no two draws share a key (the run index never meets a phase or eval)."""
    import jax
    import numpy as np

    from bstar_jax.core import streams as streams_lib
    from bstar_jax.bstar import variants

    s = streams_lib.Streams(0)
    iterations = range(0, 10)
    keys = {}
    for variant in variants.VARIANTS:
        for use_prm in (False, True):
            run = loop.run_index(variant, use_prm)
            for it in iterations:
                for phase in ("search", "queries", "sample", "sft"):
                    keys[(variant, use_prm, it, phase)] = s.key(phase, run=run, iteration=it)
    assert len({loop.run_index(v, p) for v in variants.VARIANTS for p in (False, True)}) == 2 * len(variants.VARIANTS)
    # The first four variants keep the run numbers (and so the draws) they had before the others came.
    assert [loop.run_index(v, False) for v in ("bstar", "online_rft", "iterative_rft", "rest_em")] == [0, 2, 4, 6]
    for it in iterations:
        keys[("eval", it)] = s.key("eval", iteration=it)
    for name in ("prm", "p0", "warm_start"):
        keys[name] = s.key(name)
    data = {tuple(np.asarray(jax.random.key_data(k)).ravel().tolist()) for k in keys.values()}
    assert len(data) == len(keys)
    # the same seed gives the same streams (what resume relies on)
    again = streams_lib.Streams(0).key("sample", run=3, iteration=2)
    assert np.array_equal(jax.random.key_data(again), jax.random.key_data(s.key("sample", run=3, iteration=2)))
    with pytest.raises(ValueError, match="unknown random stream"):
        s.key("nope")


# ----------------------------------------------------------------------------- resume


def _run_cli(workdir, extra=()):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's plain run
    cmd = [sys.executable, "run.py", "--config=configs/demo.py:tiny", f"--config.workdir={workdir}",
           "--config.progress=False", "--config.use_prm=(False,)", "--config.iterations=3", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, p0_dir):
    straight = with_p0(tmp_path / "straight", p0_dir)
    proc = _run_cli(straight)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]

    killed = with_p0(tmp_path / "killed", p0_dir)
    proc = _run_cli(killed)
    deadline = time.time() + 900
    # Kill as soon as iteration 1's row is written: during its checkpoint save or iteration 2
    # (a tiny iteration takes well under a second, so waiting longer could let the run finish).
    while time.time() < deadline and proc.poll() is None:
        if any(r["iteration"] == 1 for r in rows_of(killed)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(r["iteration"] for r in rows_of(killed)) < 3
    proc = _run_cli(killed)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]

    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "sft_tokens_per_s")} for r in rows]
    assert strip(rows_of(killed)) == strip(rows_of(straight))
    # Per-problem results and the exported final policies agree too.
    import numpy as np
    from safetensors.numpy import load_file

    for run in ("bstar", "online_rft"):
        for it in range(4):
            a, b = (comparisons.load_results(str(w), run, it) for w in (killed, straight))
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), (run, it)
        a, b = (load_file(str(w / "policies" / run / "final" / "model.safetensors")) for w in (killed, straight))
        assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a), run


# ----------------------------------------------------------------------------- bad input


def test_missing_data_file(tmp_path):
    c = tiny(tmp_path)
    c.data.name = "gsm8k_jsonl"
    c.data.train_path = str(tmp_path / "nope.jsonl")
    c.data.test_path = str(tmp_path / "nope.jsonl")
    with pytest.raises(Exception, match="nope.jsonl"):
        loop.run(c, mesh_lib.make_mesh())


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    good = {"question": "What is 2+3?", "answer": "2+3=<<2+3=5>>5\n#### 5"}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{not json\n")
    c = tiny(tmp_path)
    c.data.name = "gsm8k_jsonl"
    c.data.train_path = c.data.test_path = str(path)
    with pytest.raises(Exception, match=r"train\.jsonl:3"):
        loop.run(c, mesh_lib.make_mesh())


def test_empty_threshold_grid(tmp_path):
    with pytest.raises(ValueError, match=r"config\.search\.thresholds=\(\): must not be empty"):
        loop.run(tiny(tmp_path, **{"search.thresholds": ()}), mesh_lib.make_mesh())


def test_batch_not_divisible_by_data_axis(tmp_path, n_devices):
    with pytest.raises(ValueError, match=r"sft\.batch_size=12: must be a multiple of 8"):
        loop.run(tiny(tmp_path, **{"sft.batch_size": 12}), mesh_lib.make_mesh(data=8))
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any work


def test_nothing_selected_skips_sft_and_continues(tmp_path, p0_dir, caplog):
    work = with_p0(tmp_path, p0_dir)
    # τ = 5 is above every possible reward (<= 2): nothing can be selected.
    c = tiny(work, variants=("online_rft",), use_prm=(False,), iterations=2, **{"baseline.threshold": 5.0})
    with caplog.at_level("WARNING"):
        loop.run(c, mesh_lib.make_mesh())
    rows = rows_of(work)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(r["n_selected"] == 0 and r["sft_loss"] is None for r in rows[1:])
    assert "nothing selected" in caplog.text


@pytest.mark.parametrize("name", ["demo", "gsm8k", "math", "real_cpu"])
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_every_config_builds_and_validates(name, arg, n_devices):
    import importlib

    c = importlib.import_module(f"configs.{name}").get_config(arg)
    config_check.validate_fields(c, mesh_lib.make_mesh())  # fields only: no files, no workdir
    if arg == "tiny":  # tiny needs no files and no network
        assert c.data.name == "synthetic" and c.warm_start.enabled


def test_rollout_reward_is_eq2_of_the_raw_min_step_score():
    """rollout.score: r = 1[correct] + min step score / 5 (Eq. 2), the scorer giving raw scores;
    answer-only without a scorer; repeated texts share an id."""
    import numpy as np

    from bstar_jax.bstar import rollout
    from bstar_jax.generate.grid import GridSamples

    texts = np.array([[["2+2=4\n\n# Answer\n\n4", "2+2=5\n\n# Answer\n\n5", "2+2=4\n\n# Answer\n\n4", "no answer"]]],
                     dtype=object)
    zeros = np.zeros(texts.shape, np.int32)
    samples = GridSamples(temperatures=np.ones(1, np.float32), texts=texts, tokens=zeros[..., None],
                          lengths=zeros, truncated=zeros.astype(bool), logprobs=zeros[..., None].astype(np.float32),
                          prompt_ids=[[1]])
    raw = np.array([[[-2.5, 4.0, 1.0, -5.0]]], np.float32)
    gold = ["2+2=4\n\n# Answer\n\n4"]
    pool = rollout.score(samples, ["2+2?"], gold, task="math", answer_check="normalized",
                         prm_scorer=lambda s, q: raw)
    np.testing.assert_array_equal(pool.correct[0, 0], [True, False, True, False])
    np.testing.assert_array_equal(pool.valid[0, 0], [True, True, True, False])
    np.testing.assert_allclose(pool.reward[0, 0], [1 - 0.5, 0.8, 1.2, -1.0], rtol=1e-6)
    np.testing.assert_array_equal(pool.text_id[0, 0], [0, 1, 0, 2])
    plain = rollout.score(samples, ["2+2?"], gold, task="math", answer_check="normalized")
    assert plain.prm_min is None
    np.testing.assert_array_equal(plain.reward[0, 0], [1, 0, 1, 0])
