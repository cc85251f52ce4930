"""walk_model: canonical order, ignore rules, symlink policy, special files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weightvault.errors import InputError
from weightvault.tree import SymlinkError, sort_key, walk_model


def _tree(root: Path) -> Path:
    for name in ["a/b/w.bin", "a-c", "a.txt", ".git/HEAD", ".gitignore", "z/y"]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return root


def test_component_order_and_git_ignored(tmp_path: Path) -> None:
    tree = walk_model(_tree(tmp_path / "m"))
    assert [f.name for f in tree.files] == ["a/b/w.bin", "a-c", "a.txt", "z/y"]
    assert ".git" in tree.ignored and ".gitignore" in tree.ignored
    assert tree.total_size == sum(len(n.encode()) for n in ["a/b/w.bin", "a-c", "a.txt", "z/y"])
    assert sort_key("a/b") < sort_key("a-c")


def test_no_ignore_git_and_explicit_ignores(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    tree = walk_model(root, ignore_git_paths=False, ignore_paths=["z", root / "a.txt"])
    assert [f.name for f in tree.files] == [".git/HEAD", ".gitignore", "a/b/w.bin", "a-c"]
    assert tree.ignored == ("a.txt", "z")


def test_single_file_is_named_dot(tmp_path: Path) -> None:
    (tmp_path / "w").write_bytes(b"123")
    tree = walk_model(tmp_path / "w")
    assert tree.is_single_file
    assert [(f.name, f.size) for f in tree.files] == [(".", 3)]


def test_symlink_policy(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    os.symlink("a-c", root / "link")
    with pytest.raises(SymlinkError, match="symlinks are refused unless allowed") as info:
        walk_model(root)
    assert info.value.name == "link"
    assert info.value.remedy == "allow-symlinks"  # the CLI names --allow-symlinks
    tree = walk_model(root, allow_symlinks=True)
    link = next(f for f in tree.files if f.name == "link")
    assert link.is_symlink and link.path == (root / "a-c").resolve()
    (tmp_path / "outside").write_bytes(b"x")
    os.symlink(tmp_path / "outside", root / "out")
    with pytest.raises(SymlinkError, match="outside the model"):
        walk_model(root, allow_symlinks=True)
    (root / "out").unlink()
    os.symlink(root / "missing", root / "dangling")
    with pytest.raises(SymlinkError, match="dangling"):
        walk_model(root, allow_symlinks=True)
    (root / "dangling").unlink()
    os.symlink(root / "z", root / "dirlink")
    with pytest.raises(SymlinkError, match="symlink to a folder"):
        walk_model(root, allow_symlinks=True)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        walk_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        walk_model(tmp_path / "empty")
    root = _tree(tmp_path / "m")
    os.mkfifo(root / "pipe")
    with pytest.raises(InputError, match="special file"):
        walk_model(root)
    (root / "pipe").unlink()
    (root / "back\\slash").write_bytes(b"")
    with pytest.raises(InputError, match="backslash"):
        walk_model(root)


def test_empty_subfolders_are_listed_not_signed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    (root / "empty" / "deeper").mkdir(parents=True)
    tree = walk_model(root)
    assert "empty/deeper" in tree.empty_dirs
    assert all(not f.name.startswith("empty") for f in tree.files)


@pytest.mark.parametrize(
    "drop",
    [["a.txt"], ["a/b/w.bin"], ["a/b/w.bin", "z/y"], ["a-c", "a.txt", "z/y"]],
)
def test_leaving_files_out_equals_walking_again_with_them_ignored(
    tmp_path: Path, drop: list[str]
) -> None:
    root = _tree(tmp_path / "m")
    (root / "e" / "mpty").mkdir(parents=True)
    assert walk_model(root).without(drop) == walk_model(root, ignore_paths=drop)


def test_leaving_every_file_out_is_the_empty_model_error(tmp_path: Path) -> None:
    tree = walk_model(_tree(tmp_path / "m"))
    with pytest.raises(InputError, match="no files to process") as caught:
        tree.without(f.name for f in tree.files)
    assert caught.value.reason == "no-files"
