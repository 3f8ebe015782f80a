"""Writing whole or not at all: `files.write_then_rename` on files and folders."""
import pytest
from etils import epath

from bstar_jax.core import files


class Killed(RuntimeError):
    """Stands for a write that fails half way (a full disk, a bad tensor, a kill)."""


def _siblings(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "record.json"
    assert files.write_then_rename(path, lambda tmp: tmp.write_text("one")) == 3
    path.write_text("old")
    files.write_then_rename(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and _siblings(tmp_path) == ["record.json"]


def test_a_failing_file_write_leaves_the_old_content_and_no_partial(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")

    def half(tmp):
        tmp.write_text("ne")
        raise Killed

    with pytest.raises(Killed):
        files.write_then_rename(path, half)
    assert path.read_text() == "old" and _siblings(tmp_path) == ["record.json"]
    with pytest.raises(Killed):
        files.write_then_rename(tmp_path / "fresh.json", half)
    assert _siblings(tmp_path) == ["record.json"]


def _folder(tmp, **contents):
    tmp.mkdir()
    for name, text in contents.items():
        (tmp / name).write_text(text)


def test_a_folder_replaces_an_older_one(tmp_path):
    path = tmp_path / "final"
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="1", b="1"))
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="2"))
    assert sorted(p.name for p in path.iterdir()) == ["a"] and (path / "a").read_text() == "2"
    assert _siblings(tmp_path) == ["final"]


def test_a_failing_folder_write_leaves_the_old_folder_and_no_partial(tmp_path):
    path = tmp_path / "final"
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="old"))

    def half(tmp):
        _folder(tmp, a="new")
        raise Killed

    with pytest.raises(Killed):
        files.write_then_rename(path, half)
    assert (path / "a").read_text() == "old" and _siblings(tmp_path) == ["final"]


def test_a_partial_left_by_a_kill_is_discarded(tmp_path):
    path = tmp_path / "final"
    _folder(files.partial_path(path), stale="x")
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="new"))
    assert sorted(p.name for p in path.iterdir()) == ["a"] and _siblings(tmp_path) == ["final"]


def test_an_old_folder_left_between_the_renames_stays_until_the_new_one_is_in_place(tmp_path):
    """Killed after the old folder went to <p>.old and before the new one came in: <p>.old is the
    last complete content, kept through a failing write and dropped once a new folder is in place."""
    path = tmp_path / "final"
    _folder(tmp_path / "final.old", a="old")

    def failing(tmp):
        _folder(tmp, a="new")
        raise Killed

    with pytest.raises(Killed):
        files.write_then_rename(path, failing)
    assert (tmp_path / "final.old" / "a").read_text() == "old" and not path.exists()
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="new"))
    assert (path / "a").read_text() == "new" and _siblings(tmp_path) == ["final"]


def test_a_failing_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    path = tmp_path / "final"
    files.write_then_rename(path, lambda tmp: _folder(tmp, a="old"))
    cls = type(epath.Path(path))
    rename = cls.rename

    def refuse_the_partial(self, target):
        if self.name.endswith(files.PARTIAL):
            raise OSError("rename refused")
        return rename(self, target)

    monkeypatch.setattr(cls, "rename", refuse_the_partial)
    with pytest.raises(OSError, match="refused"):
        files.write_then_rename(path, lambda tmp: _folder(tmp, a="new"))
    assert (path / "a").read_text() == "old" and _siblings(tmp_path) == ["final"]
