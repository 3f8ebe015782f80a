"""Storage: workdir paths (local or gs://), one writer per file, and writing whole or not at all.

Every workdir file goes through `etils.epath`, so the workdir may be a local folder or a gs://
(or other fsspec) URL. One process (`distributed.is_writer()`) writes each file; `write_once` and
`one_writer` make the others wait until it is there. `write_then_rename` writes a file or a
folder into a temporary sibling and renames it into place, so a reader (or a resumed run) sees
the old content or the new, never half of one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable

from etils import epath

from bstar_jax.core import distributed

PARTIAL, OLD = ".partial", ".old"  # suffixes of write_then_rename's siblings


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


def partial_path(p) -> epath.Path:
    """<p>.partial: where `write_then_rename(p, ...)` writes before renaming."""
    p = epath.Path(p)
    return p.with_name(p.name + PARTIAL)


def _discard(p: epath.Path) -> None:
    if p.is_dir():
        p.rmtree()
    elif p.exists():
        p.unlink()


def write_then_rename(p, write: Callable[[epath.Path], Any]):
    """`write(tmp)` writes a file or a folder at `tmp` (<p>.partial), which is then renamed to `p`;
    returns `write`'s result. `p` holds its old content or the new, never half of either.

    A `.partial` left by a killed write is discarded first. If `write` raises, `tmp` is removed
    and `p` is untouched. A file replaces `p` in one rename. A folder cannot be renamed over a
    full one: the old folder is renamed to <p>.old, the new one into place, then <p>.old removed;
    a <p>.old left by a kill between those renames (with `p` absent) is the last complete content
    and stays until the new folder is in place. Writer-process code: call it from one process.
    """
    p = epath.Path(p)
    tmp, old = partial_path(p), p.with_name(p.name + OLD)
    _discard(tmp)
    try:
        result = write(tmp)
        if not tmp.is_dir():
            tmp.replace(p)
            return result
        moved = False
        if p.exists():
            _discard(old)  # `p` is complete, so an older <p>.old is not needed
            p.rename(old)
            moved = True
        try:
            tmp.rename(p)
        except BaseException:
            if moved:
                old.rename(p)
            raise
    except BaseException:
        _discard(tmp)
        raise
    _discard(old)
    return result


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
