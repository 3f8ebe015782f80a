"""Datasets as lists of `Example` records, and the one entry point configs use: `load_split`.

    load_split("synthetic", "train", seed=0, n_train=1000, n_dev=64, n_test=128, difficulty=2)
    load_split("gsm8k_jsonl", "test", data_dir="data/gsm8k")        # data/gsm8k/test.jsonl
    load_split("gsm8k_tfds", "test", jsonl_dir="data/gsm8k", data_dir="/tmp/tfds")  # offline
    load_split("gsm8k_tfds", "test", data_dir="~/tensorflow_datasets")   # TFDS download
    load_split("math_jsonl", "test", path="data/math500.jsonl", limit=100)
    load_split("arc_jsonl", "test", path="data/ARC-Challenge-Test.jsonl")
    load_split("gsm_symbolic", "test", seed=0, n_test=200)
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

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


def load(spec: Mapping[str, Any]) -> list[Example]:
    """`load_split(**spec)` for a mapping (dict or ml_collections ConfigDict) with name, split."""
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    missing = [k for k in ("name", "split") if k not in spec]
    if missing:
        raise ValueError(f"data spec lacks {missing}: {spec}")
    return load_split(spec.pop("name"), spec.pop("split"), **spec)


__all__ = ["DataError", "Example", "NAMES", "alternative_solutions", "load", "load_arc_jsonl",
           "load_gsm8k_jsonl", "load_math_jsonl", "load_split", "make_splits",
           "make_symbolic_splits", "read_records", "with_alternatives"]
