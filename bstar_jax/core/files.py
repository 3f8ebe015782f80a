"""Storage: workdir paths (local or gs://) and one writer per file.

Every workdir file goes through `etils.epath`, so the workdir may be a local folder or a gs://
(or other fsspec) URL. One process (`distributed.is_writer()`) writes each file; `write_once` and
`one_writer` make the others wait until it is there.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable

from etils import epath

from bstar_jax.core import distributed


def path(p) -> epath.Path:
    """An `epath.Path`: local paths and gs:// (or other fsspec) URLs alike."""
    return epath.Path(p)


def is_local(p) -> bool:
    """True for a path of this machine's file system (not gs:// or another fsspec URL)."""
    return "://" not in os.fspath(p)


def write_once(p, write: Callable[[epath.Path], Any], *, name: str | None = None):
    """`write(p)` in the writer process only, then every process waits for it; returns
    `write`'s result in the writer, None elsewhere. `p` must be on storage every host sees
    (a shared file system or gs://). If the writer fails it raises; the others are ended by the
    watchdog, not left waiting."""
    p = epath.Path(p)
    out = write(p) if distributed.is_writer() else None
    distributed.barrier(name or f"write_once:{p}")
    return out


@contextlib.contextmanager
def one_writer(name: str):
    """`with one_writer("p0") as writing: if writing: ...`: the body's writes happen in the writer
    only (`writing` is True there); every process leaves the block once the writer has."""
    yield distributed.is_writer()
    distributed.barrier(name)


def copy_tree(src, dst) -> None:
    """Copies the files of folder `src` (recursively) into `dst`; either may be gs://."""
    src, dst = epath.Path(src), epath.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_dir():
            copy_tree(f, dst / f.name)
        else:
            f.copy(dst / f.name, overwrite=True)


def local_folder(p) -> str:
    """A local path holding folder `p`'s files, for libraries that read only local files
    (transformers, safetensors): `p` itself when local, else a copy in a fresh temp folder."""
    if is_local(p):
        return os.fspath(p)
    local = tempfile.mkdtemp(prefix="bstar_")
    copy_tree(p, local)
    return local
