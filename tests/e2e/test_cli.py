"""Bad input through the real command line: `python run.py --config=configs/demo.py:tiny ...`.

Every case asserts the exit status, ONE `error:` line on stderr naming the cause, no traceback,
and that nothing the user had (checkpoints, P_0, metrics rows, the run record) changed. Most
cases fail during validation (seconds: the JAX import); they run in a small process pool. Cases
that need a finished workdir share one tiny run (one iteration, one variant) made once per module.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config=configs/demo.py:tiny", "--config.progress=False"]
# The shared finished run: one B-STaR iteration over a short warm start (its primary comparison
# against P_0: the only other run it makes, so validation logs nothing about it).
FINISHED = ["--config.iterations=1", "--config.variants=('bstar',)", "--config.use_prm=(False,)",
            "--config.warm_start.steps=30", "--config.primary=bstar - P_0"]


def _env(devices: int = 1) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_cli(args, workdir=None, *, devices: int = 1, timeout: int = 600, config=TINY):
    wd = [f"--config.workdir={workdir}"] if workdir else []
    return subprocess.run([sys.executable, "run.py", *config, *wd, *args], cwd=ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder) -> dict:
    """relative path -> sha256 of every file under `folder`."""
    out = {}
    for base, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_one_error(res, code: int, *needles: str, only_line: bool = True) -> str:
    """Exit status `code`, no traceback, exactly one `error:` line containing every needle (and,
    for errors raised during validation, nothing else on stderr)."""
    err = res.stderr
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert res.returncode == code, (res.returncode, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    if only_line:
        assert err.strip().splitlines() == lines, err[-3000:]
    return lines[0]


# --------------------------------------------------------------------------- data and model files


def _write(path, text: str | bytes) -> str:
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as f:
        f.write(text)
    return str(path)


GOOD = '{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n'


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    f = {"good": _write(d / "good.jsonl", GOOD * 3),
         "malformed": _write(d / "malformed.jsonl", GOOD * 2 + '{"question": "x", \n'),
         "latin1": _write(d / "latin1.jsonl", GOOD.encode() + '{"question": "caf\xe9"}\n'.encode("latin-1")),
         "no_question": _write(d / "no_question.jsonl", GOOD + '{"answer": "#### 3"}\n'),
         "no_hashes": _write(d / "no_hashes.jsonl", '{"question": "q", "answer": "just 3"}\n'),
         "huge": _write(d / "huge.jsonl", '{"question": "' + "x" * (3 << 20) + '", "answer": "#### 1"}\n'),
         "empty": _write(d / "empty.jsonl", ""),
         "folder": str(d),
         "text_model": _write(d / "model.txt", "not a model"),
         "not_a_file": "/tmp/bstar-no-such-dir/train.jsonl",
         "plain_file": _write(d / "plain_file", "x")}
    os.makedirs(d / "empty_model", exist_ok=True)
    f["empty_model"] = str(d / "empty_model")
    return f


def data_args(train, test=None):
    return ["--config.data.name=gsm8k_jsonl", f"--config.data.train_path={train}",
            f"--config.data.test_path={test or train}"]


# --------------------------------------------------------------------------- validation cases (pool)

# id -> (args (a function of the files fixture), needles in the one error line, devices)
VALIDATION = {
    "typo_field": (lambda f: ["--config.iteratons=3"], ["--config.iteratons", "did you mean --config.iterations"], 1),
    "typo_nested_field": (lambda f: ["--config.sft.lrr=1"], ["--config.sft.lrr", "did you mean --config.sft.lr"], 1),
    "typo_flag": (lambda f: ["--verbse"], ["--verbse", "did you mean --verbose"], 1),
    "not_an_int": (lambda f: ["--config.iterations=abc"], ["--config.iterations=abc"], 1),
    "missing_config_file": (lambda f: [], ["--config=configs/nope.py", "No such file"], 1),
    "negative_iterations": (lambda f: ["--config.iterations=-1"], ["config.iterations=-1", ">= 0"], 1),
    "zero_samples": (lambda f: ["--config.samples_per_query=0"], ["config.samples_per_query=0", ">= 1"], 1),
    "zero_search_samples": (lambda f: ["--config.search.samples_per_query=0"], ["search.samples_per_query"], 1),
    "unknown_task": (lambda f: ["--config.task=foo"], ["config.task='foo'", "gsm8k, math, arc"], 1),
    "unknown_answer_check": (lambda f: ["--config.answer_check=fuzzy"], ["config.answer_check"], 1),
    "unknown_variant": (lambda f: ["--config.variants=('bstar','foo')"], ["config.variants", "'foo'"], 1),
    "empty_variants": (lambda f: ["--config.variants=()"], ["config.variants", "empty"], 1),
    "unknown_search_mode": (lambda f: ["--config.search.mode=fast"], ["config.search.mode", "paper"], 1),
    "retired_restrict": (lambda f: ["--config.search.restrict=temperature"], ["--config.search.restrict"], 1),
    "zero_temperature": (lambda f: ["--config.search.temperatures=(0.0,1.0)"],
                         ["config.search.temperatures", "> 0"], 1),
    "empty_temperatures": (lambda f: ["--config.search.temperatures=()"], ["config.search.temperatures", "empty"], 1),
    "empty_thresholds": (lambda f: ["--config.search.thresholds=()"], ["config.search.thresholds", "empty"], 1),
    "repeated_temperatures": (lambda f: ["--config.search.temperatures=(0.7,0.7)"], ["repeated"], 1),
    "s_above_k": (lambda f: ["--config.eval.s_values=(1,8)"], ["config.eval.s_values", "K=4"], 1),
    "keep_zero": (lambda f: ["--config.checkpoint.keep=0"], ["config.checkpoint.keep=0", ">= 1"], 1),
    "zero_lr": (lambda f: ["--config.sft.lr=0.0"], ["config.sft.lr=0.0", "> 0"], 1),
    "nan_lr": (lambda f: ["--config.sft.lr=nan"], ["config.sft.lr", "finite"], 1),
    "min_lr_above_lr": (lambda f: ["--config.sft.min_lr=1.0"], ["config.sft.min_lr"], 1),
    "warmup_after_decay": (lambda f: ["--config.sft.warmup_steps=100"], ["config.sft.warmup_steps", "decay_steps"], 1),
    "micro_batch_not_dividing": (lambda f: ["--config.sft.micro_batch_size=5"],
                                 ["config.sft.batch_size=16", "micro_batch_size=5"], 1),
    "batch_vs_mesh": (lambda f: ["--config.sft.batch_size=12", "--config.sft.micro_batch_size=12"],
                      ["config.sft.batch_size=12", "multiple of 8"], 8),
    "mesh_does_not_fit": (lambda f: ["--config.mesh.data=3"], ["config.mesh", "1 device"], 1),
    "unknown_dtype": (lambda f: ["--config.model.dtype=float8"], ["config.model.dtype"], 1),
    "top_p_above_one": (lambda f: ["--config.sampling.top_p=1.5"], ["config.sampling.top_p=1.5"], 1),
    "unknown_dataset": (lambda f: ["--config.data.name=imagenet"], ["config.data.name='imagenet'"], 1),
    "kv_heads": (lambda f: ["--config.warm_start.num_kv_heads=3"], ["config.warm_start.num_heads"], 1),
    "context_too_short": (lambda f: ["--config.warm_start.max_len=128"], ["config.sft.max_len", "warm_start.max_len"], 1),
    "on_config_change": (lambda f: ["--config.on_config_change=maybe"], ["config.on_config_change"], 1),
    # data files, named with file:line
    "data_missing": (lambda f: data_args(f["not_a_file"]), ["config.data.train_path", "no such file"], 1),
    "data_folder": (lambda f: data_args(f["folder"]), ["config.data.train_path", "is a folder"], 1),
    "data_malformed": (lambda f: data_args(f["good"], f["malformed"]), ["malformed.jsonl:3: malformed JSON"], 1),
    "data_not_utf8": (lambda f: data_args(f["latin1"]), ["latin1.jsonl:2: not UTF-8"], 1),
    "data_missing_field": (lambda f: data_args(f["no_question"]), ['no_question.jsonl:2: missing field "question"'], 1),
    "data_no_final_answer": (lambda f: data_args(f["no_hashes"]), ["no_hashes.jsonl:1:", "####"], 1),
    "data_huge_line": (lambda f: data_args(f["huge"]), ["huge.jsonl:1: line longer than"], 1),
    "data_empty": (lambda f: data_args(f["empty"]), ["empty.jsonl: empty file"], 1),
    # model paths (no warm start), checked before the tokenizer is looked for
    "model_missing": (lambda f: ["--config.warm_start.enabled=False", "--config.model.path=/tmp/bstar-no-model"],
                      ["config.model.path='/tmp/bstar-no-model'", "no such file or folder"], 1),
    "model_folder_without_config": (lambda f: ["--config.warm_start.enabled=False",
                                               f"--config.model.path={f['empty_model']}"], ["no config.json"], 1),
    "model_not_gguf": (lambda f: ["--config.warm_start.enabled=False", f"--config.model.path={f['text_model']}"],
                       ["config.model.path", "not a .gguf"], 1),
    # workdir
    "workdir_is_a_file": (lambda f: [f"--config.workdir={f['plain_file']}"], ["config.workdir", "is a file"], 1),
    "workdir_not_writable": (lambda f: ["--config.workdir=/proc/bstar-workdir"], ["config.workdir", "not writable"], 1),
}


@pytest.fixture(scope="module")
def validation_results(files, tmp_path_factory):
    """Every validation case, run three at a time."""
    base = tmp_path_factory.mktemp("validation")

    def one(name):
        make_args, _, devices = VALIDATION[name]
        args = make_args(files)
        config = ["--config=configs/nope.py"] if name == "missing_config_file" else TINY
        workdir = None if any(a.startswith("--config.workdir=") for a in args) else str(base / name)
        return run_cli(args, workdir, devices=devices, config=config, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(VALIDATION, pool.map(one, VALIDATION))), base


@pytest.mark.parametrize("name", list(VALIDATION))
def test_bad_input_is_one_line_before_any_work(name, validation_results):
    results, base = validation_results
    assert_one_error(results[name], 2, *VALIDATION[name][1])
    workdir = str(base / name)
    leftovers = os.listdir(workdir) if os.path.isdir(workdir) else []
    assert not leftovers, leftovers  # nothing was made: no P_0, no checkpoints, no record


def test_verbose_shows_the_traceback(tmp_path):
    res = run_cli(["--config.task=foo", "--verbose"], tmp_path / "w")
    assert res.returncode == 2
    assert "Traceback" in res.stderr and res.stderr.strip().splitlines()[-1].startswith("error: config.task")


# --------------------------------------------------------------------------- a finished workdir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny run to the end; the tests below must leave it as it is (or work on copies)."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    res = run_cli(FINISHED, workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    # It ends with the summary on screen: each run's P_0 -> last Pass@1 and where the report is.
    tail = res.stdout[res.stdout.index("Summary of"):]
    assert "bstar " in tail and "->" in tail and os.path.join(workdir, "report.md") in tail, res.stdout[-2000:]
    return workdir


def copy_of(workdir, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(workdir, dst)
    return dst


def metric_rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


REFUSED = {
    "other_seed": (["--config.seed=1"], ["seed: 0 -> 1", "--config.on_config_change=continue"]),
    "other_model_size": (["--config.warm_start.hidden_size=32"], ["warm_start.hidden_size: 64 -> 32"]),
    "fewer_iterations": (["--config.iterations=0"], ["iterations: 1 -> 0"]),
    "other_lr": (["--config.sft.lr=0.001"], ["sft.lr"]),
    "other_task_size": (["--config.samples_per_query=2"], ["samples_per_query: 4 -> 2"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_changed_config_is_refused_and_nothing_changes(name, finished):
    before = snapshot(finished)
    args, needles = REFUSED[name]
    res = run_cli(FINISHED + args, finished)
    assert_one_error(res, 2, finished, *needles)
    assert snapshot(finished) == before


def test_a_damaged_run_record_is_named(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    _write(os.path.join(work, "run_config.json"), "{ not json")
    before = snapshot(work)
    res = run_cli(FINISHED, work)
    assert_one_error(res, 2, "run_config.json: unreadable run record")
    assert snapshot(work) == before


def test_rerun_resumes_without_a_second_row(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    rows = metric_rows(work)
    final = os.path.join(work, "policies", "bstar", "final")
    stamp = os.path.getmtime(os.path.join(final, "model.safetensors"))
    res = run_cli(FINISHED, work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [(r["variant"], r["iteration"]) for r in metric_rows(work)] == [(r["variant"], r["iteration"]) for r in rows]
    assert metric_rows(work) == rows
    # The exported policy already holds the last iteration: not written again.
    assert os.path.getmtime(os.path.join(final, "model.safetensors")) == stamp
    assert sorted(os.listdir(os.path.dirname(final))) == ["final"]


def test_truncated_model_file_is_named(finished, tmp_path):
    model = str(tmp_path / "model")
    shutil.copytree(os.path.join(finished, "p0"), model)
    weights = os.path.join(model, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    res = run_cli(FINISHED + ["--config.warm_start.enabled=False", f"--config.model.path={model}"], tmp_path / "w")
    assert_one_error(res, 2, "model.safetensors", "truncated", only_line=False)


def test_unknown_architecture_is_named(finished, tmp_path):
    model = str(tmp_path / "model")
    shutil.copytree(os.path.join(finished, "p0"), model)
    cfg_path = os.path.join(model, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["model_type"] = "gpt2"
    _write(cfg_path, json.dumps(cfg))
    res = run_cli(FINISHED + ["--config.warm_start.enabled=False", f"--config.model.path={model}"], tmp_path / "w")
    assert_one_error(res, 2, "gpt2", only_line=False)


def test_a_different_model_over_old_checkpoints_is_one_line(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    shutil.rmtree(os.path.join(work, "p0"))  # a new P_0 of another size, asked for explicitly
    ckpts = snapshot(os.path.join(work, "checkpoints"))
    res = run_cli(FINISHED + ["--config.warm_start.hidden_size=32", "--config.warm_start.steps=2",
                              "--config.on_config_change=continue"], work)
    assert_one_error(res, 2, "holds a different model", "params", "new --config.workdir", only_line=False)
    assert snapshot(os.path.join(work, "checkpoints")) == ckpts


@pytest.mark.xfail(reason="orbax's background reads of a damaged checkpoint can print bare traceback headers "
                          "from their threads before the one error line (a race; the line and exit status 2 hold)",
                   strict=False)
def test_damaged_checkpoints_are_one_line(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    root = os.path.join(work, "checkpoints")
    for base, _, names in os.walk(root):
        for n in names:
            if "state" in base and "initial" not in base and not n.startswith(("_", ".")):
                _write(os.path.join(base, n), b"\0garbage")
    rows = metric_rows(work)
    res = run_cli(FINISHED, work)
    assert_one_error(res, 2, "no readable checkpoint", only_line=False)
    assert metric_rows(work) == rows


@pytest.mark.xfail(reason="needs the trainer's divergence detection (weights far outside their running range)",
                   strict=False)
def test_divergence_stops_with_the_last_good_checkpoint(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    kept = sorted(os.listdir(os.path.join(work, "checkpoints", "bstar")))
    # The reference solutions are selected (reward 1), so that SFT runs whatever the samples.
    res = run_cli(FINISHED + ["--config.iterations=3", "--config.sft.lr=1e6", "--config.sft.min_lr=0.0",
                              "--config.search.include_reference=True", "--config.on_config_change=continue"], work)
    assert_one_error(res, 2, "sft", only_line=False)
    assert set(kept) <= set(os.listdir(os.path.join(work, "checkpoints", "bstar")))


def _default_sigint():
    """A shell without job control starts background commands with SIGINT ignored, and Python then
    keeps it ignored; the child must get Ctrl-C however the test suite itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    ckpts = snapshot(os.path.join(work, "checkpoints"))
    proc = subprocess.Popen([sys.executable, "run.py", *TINY, f"--config.workdir={work}", *FINISHED,
                             "--config.iterations=3"], cwd=ROOT, env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, preexec_fn=_default_sigint)
    lines = []
    deadline = time.time() + 300
    for line in proc.stderr:  # interrupt once it is resuming (past validation, into the work)
        lines.append(line)
        if "resuming after iteration" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    err = "".join(lines) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: rerun the same command to resume from the last checkpoint"
    after = snapshot(os.path.join(work, "checkpoints"))
    last = {k: v for k, v in ckpts.items() if k.startswith(os.path.join("bstar", "1", ""))}
    assert last and {k: after.get(k) for k in last} == last
