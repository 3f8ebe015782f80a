"""Datasets as lists of `Example` records, and the one entry point configs use: `load_split`.

    load_split("synthetic", "train", seed=0, n_train=1000, n_dev=64, n_test=128, difficulty=2)
    load_split("gsm8k_jsonl", "test", data_dir="data/gsm8k")        # data/gsm8k/test.jsonl
    load_split("gsm8k_tfds", "test", jsonl_dir="data/gsm8k", data_dir="/tmp/tfds")  # offline
    load_split("gsm8k_tfds", "test", data_dir="~/tensorflow_datasets")   # TFDS download
    load_split("math_jsonl", "test", path="data/math500.jsonl", limit=100)
    load_split("arc_jsonl", "test", path="data/ARC-Challenge-Test.jsonl")
    load_split("gsm_symbolic", "test", seed=0, n_test=200)

The loop reads all three splits at once from its data config with `load_splits`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import numpy as np

from bstar_jax.data.arc import load_arc_jsonl
from bstar_jax.data.gsm8k import load_gsm8k_jsonl
from bstar_jax.data.gsm_symbolic import make_symbolic_splits
from bstar_jax.data.hendrycks_math import load_math_jsonl
from bstar_jax.data.records import DataError, Example, read_records
from bstar_jax.data.synthetic import alternative_solutions, make_splits, with_alternatives

NAMES = ("synthetic", "gsm8k_jsonl", "gsm8k_tfds", "math_jsonl", "arc_jsonl", "gsm_symbolic")
_JSONL = {"gsm8k_jsonl": load_gsm8k_jsonl, "math_jsonl": load_math_jsonl, "arc_jsonl": load_arc_jsonl}


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
    - gsm8k_jsonl, math_jsonl, arc_jsonl: path=<file> or data_dir=<folder> holding
      "{split}.jsonl"; limit;
    - gsm8k_tfds: data_dir, jsonl_dir (offline build from local JSONL), download, rebuild, limit.
    """
    if name == "synthetic":
        return _pick(make_splits(**kwargs), name, split)
    if name == "gsm_symbolic":
        return _pick(make_symbolic_splits(**kwargs), name, split)
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


def load_splits(data_config, seed: int) -> dict[str, list[Example]]:
    """train / dev / test of `data_config` (the `config.data` block: name, train_path, test_path,
    data_dir, num_train, num_dev, num_test, difficulty).

    Generated datasets (synthetic, gsm_symbolic) make all three splits from `seed`. File
    datasets read train and test (the first num_test), and the dev subset is num_dev training
    queries drawn with `seed`: the paper's dev set comes from the training queries, disjoint
    from the test set (docs/algorithm.md#search).
    """
    d, seed = data_config, int(seed)
    if d.name in ("synthetic", "gsm_symbolic"):
        kw = dict(seed=seed, n_train=int(d.num_train), n_dev=int(d.num_dev), n_test=int(d.num_test))
        if d.name == "synthetic":
            kw["difficulty"] = int(d.difficulty)
        return {split: load_split(d.name, split, **kw) for split in ("train", "dev", "test")}
    if d.name == "gsm8k_tfds":
        per_split = {split: {"data_dir": d.data_dir} if d.data_dir else {} for split in ("train", "test")}
    else:
        per_split = {"train": {"path": d.train_path}, "test": {"path": d.test_path}}
    train = load_split(d.name, "train", **per_split["train"])
    test = load_split(d.name, "test", **per_split["test"])[: int(d.num_test)]
    order = np.random.default_rng(seed).permutation(len(train))
    return {"train": train, "dev": [train[i] for i in order[: int(d.num_dev)]], "test": test}


def load(spec: Mapping[str, Any]) -> list[Example]:
    """`load_split(**spec)` for a mapping (dict or ml_collections ConfigDict) with name, split."""
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    missing = [k for k in ("name", "split") if k not in spec]
    if missing:
        raise ValueError(f"data spec lacks {missing}: {spec}")
    return load_split(spec.pop("name"), spec.pop("split"), **spec)


__all__ = ["DataError", "Example", "NAMES", "alternative_solutions", "load", "load_arc_jsonl",
           "load_gsm8k_jsonl", "load_math_jsonl", "load_split", "load_splits", "make_splits",
           "make_symbolic_splits", "read_records", "with_alternatives"]
