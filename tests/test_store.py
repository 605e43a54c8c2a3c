"""Folders built under a temporary name and swapped into place: never half-written."""

import pytest

from dcobench.store import atomic_folder


def test_atomic_folder_replaces_on_success_and_keeps_the_old_on_failure(tmp_path):
    target = tmp_path / "sub" / "lora"
    with atomic_folder(target) as tmp:
        assert not target.exists() and tmp.parent == target.parent
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-way")
    assert (target / "a.txt").read_text() == "first"  # untouched

    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, not merged
    assert [p.name for p in target.parent.iterdir()] == ["lora"]  # no temporary or old folder left
