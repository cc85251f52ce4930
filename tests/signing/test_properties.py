"""Property tests over random model trees (hypothesis)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.signing import check, digest, sign
from weightvault.signing.key import KeySigner, KeyVerifier

_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = KeySigner(_KEY)
VERIFIER = KeyVerifier(_KEY.public_key())

_segment = st.text(alphabet="abcAB-_.:0 é", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..") and not s.startswith(".git") and s != "model.sig"
)
_tree = st.dictionaries(
    keys=st.lists(_segment, min_size=1, max_size=3).map(tuple),
    values=st.binary(max_size=700),
    min_size=1,
    max_size=8,
)


def _materialize(tree: dict[tuple[str, ...], bytes]) -> Path | None:
    root = Path(tempfile.mkdtemp(prefix="wv-prop-")) / "model"
    root.mkdir()
    for parts, data in tree.items():
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                return _discard(root)
            path.write_bytes(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            return _discard(root)  # a name is both a file and a folder: not a tree
    return root


def _discard(root: Path) -> None:
    shutil.rmtree(root.parent)
    return None


SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    tree=_tree,
    serialization=st.sampled_from(["files", "shards"]),
    hash_type=st.sampled_from(["sha256", "blake2", "blake3"]),
)
def test_sign_verify_round_trip(
    tree: dict[tuple[str, ...], bytes], serialization: str, hash_type: str
) -> None:
    root = _materialize(tree)
    if root is None:
        return
    try:
        sign(root, SIGNER, serialization=serialization, hash_type=hash_type, shard_size=128)
        assert check(root, None, VERIFIER).ok
    finally:
        shutil.rmtree(root.parent)


@SETTINGS
@given(tree=_tree, workers=st.integers(min_value=1, max_value=6))
def test_digests_do_not_depend_on_worker_count(
    tree: dict[tuple[str, ...], bytes], workers: int
) -> None:
    root = _materialize(tree)
    if root is None:
        return
    try:
        for serialization in ("files", "shards"):
            one = digest(root, serialization=serialization, shard_size=100, max_workers=1)
            many = digest(root, serialization=serialization, shard_size=100, max_workers=workers)
            assert one == many
    finally:
        shutil.rmtree(root.parent)


@SETTINGS
@given(tree=_tree, pick=st.integers(min_value=0), where=st.integers(min_value=0), data=st.data())
def test_any_single_byte_change_is_detected(
    tree: dict[tuple[str, ...], bytes], pick: int, where: int, data: st.DataObject
) -> None:
    root = _materialize(tree)
    if root is None:
        return
    try:
        serialization = data.draw(st.sampled_from(["files", "shards"]))
        sign(root, SIGNER, serialization=serialization, shard_size=64)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "model.sig")
        target = files[pick % len(files)]
        content = bytearray(target.read_bytes())
        if content:
            position = where % len(content)
            content[position] ^= data.draw(st.integers(min_value=1, max_value=255))
        else:
            content = bytearray(b"\x00")  # an empty file gains a byte
        target.write_bytes(bytes(content))
        result = check(root, None, VERIFIER)
        assert result.changed == (target.relative_to(root).as_posix(),)
    finally:
        shutil.rmtree(root.parent)


def test_tree_strategy_produces_nested_trees() -> None:
    """Guard against a strategy that silently generates nothing interesting."""
    example = {("a", "b"): b"1", ("a-c",): b"2"}
    root = _materialize(example)
    assert root is not None
    try:
        assert [r.name for r in digest(root).resources] == ["a/b", "a-c"]
    finally:
        shutil.rmtree(root.parent)


