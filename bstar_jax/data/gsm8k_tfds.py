"""GSM8K through TensorFlow Datasets, read with `tfds.data_source` (no tensorflow needed).

Online: TFDS's own `gsm8k` builder downloads the four JSONL files and prepares them as
`array_record` (the only file format `tfds.data_source` reads). Offline: `Gsm8kLocal`, a
subclass of that builder with the same features, reads `{split}.jsonl` files from a local folder
(TFDS's "manual_dir"), writes `array_record` shards into `data_dir`, and `tfds.data_source(...,
download=False)` reads them back. Writing and reading both work with tensorflow absent: TFDS
serialises examples with its own protobuf code and array_record needs no tensorflow. Importing
this module imports tensorflow_datasets (a second or two); `bstar_jax.data` imports it lazily.
"""
from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds
from tensorflow_datasets.text.gsm8k import Gsm8k  # registers "gsm8k" (lazy in tfds' __init__)

from bstar_jax.data.gsm8k import gsm8k_example
from bstar_jax.data.records import DataError, Example, read_records, take

ARRAY_RECORD = {"file_format": "array_record"}


class Gsm8kLocal(Gsm8k):
    """TFDS `gsm8k` built from local JSONL files: every `<split>.jsonl` in manual_dir is a split.

    Registered as "gsm8k_local". Shuffling is off, so record i of a split is line i of its
    file and ids agree with `load_gsm8k_jsonl`.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put GSM8K JSONL files (train.jsonl, test.jsonl, ...) in manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        info = super()._info()
        return tfds.core.DatasetInfo(builder=self, description=info.description,
                                     features=info.features, homepage=info.homepage,
                                     citation=info.citation, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        folder = pathlib.Path(dl_manager.manual_dir)
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise DataError(f"{folder}: no *.jsonl files to build gsm8k_local from")
        for f in files:
            if not f.stem.isidentifier():
                raise DataError(f"{f}: the file stem is the split name and must be an identifier")
        return {f.stem: self._generate_examples(f) for f in files}

    def _generate_examples(self, path):
        for i, (where, rec) in enumerate(read_records(path)):
            gsm8k_example(rec, where, default_id=str(i))  # validates: file and line on error
            annotation, _, short = rec["answer"].rpartition("####")
            yield i, {"question": rec["question"], "answer": rec["answer"],
                      "annotation": annotation, "short_answer": short.strip()}


def prepare_local_gsm8k(jsonl_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                        *, rebuild: bool = False) -> tfds.core.DatasetBuilder:
    """Build the `gsm8k_local` array_record dataset from `jsonl_dir` into `data_dir`.

    A no-op when it is already prepared there (pass `rebuild=True` after editing the files).
    """
    jsonl_dir = pathlib.Path(jsonl_dir)
    if not jsonl_dir.is_dir():
        raise DataError(f"{jsonl_dir}: folder not found (expected train.jsonl / test.jsonl)")
    builder = Gsm8kLocal(data_dir=None if data_dir is None else os.fspath(data_dir),
                         **ARRAY_RECORD)
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if rebuild
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(jsonl_dir), download_mode=mode,
                                          try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    return builder


def load_gsm8k_tfds(split: str = "train", *, data_dir: str | os.PathLike | None = None,
                    jsonl_dir: str | os.PathLike | None = None, download: bool = True,
                    rebuild: bool = False, limit: int | None = None) -> list[Example]:
    """GSM8K examples of `split` read with `tfds.data_source`.

    With `jsonl_dir`, the offline builder `gsm8k_local` is prepared from that folder first;
    without it, TFDS's `gsm8k` is read from `data_dir` (and downloaded there when `download`).
    Ids are "gsm8k-{split}-{index}".
    """
    if jsonl_dir is not None:
        name = "gsm8k_local"
        prepare_local_gsm8k(jsonl_dir, data_dir, rebuild=rebuild)
        download = False
    else:
        name = "gsm8k"
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                                  builder_kwargs=dict(ARRAY_RECORD))
    except DataError:
        raise
    except Exception as e:  # network, missing split, unprepared data_dir: one readable error
        hint = ("" if name == "gsm8k_local" else " Offline, pass jsonl_dir=<folder with "
                "train.jsonl, test.jsonl> to build it from local files.")
        raise DataError(f"tfds {name}[{split}] (data_dir={data_dir}, download={download}): "
                        f"{type(e).__name__}: {e}.{hint}") from e
    return take(examples_from_source(source, split, name), limit)


def examples_from_source(source, split: str, name: str = "gsm8k") -> list[Example]:
    """Convert the records of a GSM8K `tfds.data_source` into `Example`s."""
    out = []
    for i in range(len(source)):
        rec = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in source[i].items()}
        where = f"tfds {name}[{split}] record {i}"
        out.append(gsm8k_example(rec, where, f"gsm8k-{split}-{i}"))
    return out
