"""The OMS manifest and in-toto statement: round trips, both orders, legacy v0.1, strictness."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightvault.errors import FormatError
from weightvault.oms.manifest import (
    LEGACY_PREDICATE_TYPE,
    PREDICATE_TYPE,
    Manifest,
    Resource,
    Serialization,
    parse_statement,
    split_shard_name,
)


def _manifest(names: list[str], method: str = "files") -> Manifest:
    size = 10 if method == "shards" else None
    params = Serialization(method, "sha256", False, (".git", "model.sig"), size)  # type: ignore[arg-type]
    algorithm = params.resource_algorithm
    return Manifest.build(
        "m", [Resource(n, bytes([i]) * 32, algorithm) for i, n in enumerate(names)], params
    )


def test_statement_round_trip_and_layout() -> None:
    manifest = _manifest(["a-c", "a/b/w.bin", "config.json"])
    assert [r.name for r in manifest.resources] == ["a/b/w.bin", "a-c", "config.json"]
    statement = json.loads(manifest.to_payload())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "m", "digest": {"sha256": manifest.root_digest.hex()}}]
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [".git", "model.sig"],
    }
    assert parse_statement(manifest.to_payload()) == manifest


def test_root_digest_is_sha256_of_concatenated_digests() -> None:
    import hashlib

    manifest = _manifest(["x", "y"])
    assert manifest.root_digest == hashlib.sha256(b"\x00" * 32 + b"\x01" * 32).digest()


def test_shard_manifest_matches_peer_naming() -> None:
    manifest = _manifest(["w:10:20", "w:0:10", "a:0:5"], "shards")
    assert [r.name for r in manifest.resources] == ["a:0:5", "w:0:10", "w:10:20"]
    statement = json.loads(manifest.to_payload())
    assert statement["predicate"]["serialization"]["shard_size"] == 10
    assert statement["predicate"]["resources"][0]["algorithm"] == "sha256-sharded-10"
    assert parse_statement(manifest.to_payload()) == manifest


def test_float_shard_size_from_the_peer_is_accepted() -> None:
    manifest = _manifest(["w:0:10"], "shards")
    statement = json.loads(manifest.to_payload())
    statement["predicate"]["serialization"]["shard_size"] = 10.0
    assert parse_statement(json.dumps(statement).encode()).serialization.shard_size == 10
    for bad in (10.5, -10, 0, True, "10"):
        statement["predicate"]["serialization"]["shard_size"] = bad
        with pytest.raises(FormatError, match="shard_size"):
            parse_statement(json.dumps(statement).encode())


def test_blake2_is_recorded_as_blake2b() -> None:
    params = Serialization("files", "blake2")
    assert params.to_json_obj()["hash_type"] == "blake2b"
    assert params.resource_algorithm == "blake2b"
    manifest = Manifest.build("m", [Resource("f", b"\x00" * 64, "blake2b")], params)
    assert parse_statement(manifest.to_payload()).serialization.hash_type == "blake2"


def test_legacy_v01_statement() -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "b", "digest": {"sha256": "11" * 32}, "annotations": {"x": "y"}},
            {"name": "a", "digest": {"sha256": "22" * 32}},
        ],
        "predicateType": LEGACY_PREDICATE_TYPE,
        "predicate": {"unused": "x"},
    }
    manifest = parse_statement(json.dumps(statement).encode())
    assert manifest.legacy
    assert [r.name for r in manifest.resources] == ["a", "b"]
    assert manifest.serialization.ignore_paths is None


def test_split_shard_name() -> None:
    assert split_shard_name("a:b:0:10", "r") == ("a:b", 0, 10)
    for bad in ("a", "a:1", ":0:1", "a:x:1", "a:01:2", "a:2:1", "a:-1:2", "a:١:2"):
        with pytest.raises(FormatError):
            split_shard_name(bad, "r")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("predicate", "serialization", "extra"), 1, "serialization.extra: unknown field"),
        (("predicate", "resources", 0, "extra"), 1, r"resources\[0\]\.extra: unknown field"),
        (("predicate", "resources", 0, "algorithm"), "blake3", "does not match the serialization"),
        (("predicate", "resources", 0, "digest"), "00", "wrong length"),
        (("predicate", "resources", 0, "name"), "", "name: empty"),
        (("predicate", "resources", 0, "name"), 7, "expected a string"),
        (("subject", 0, "digest", "sha256"), "zz", "not lowercase hex"),
        (("extra",), 1, "payload.extra: unknown field"),
    ],
)
def test_strict_fields(path: tuple[object, ...], value: object, message: str) -> None:
    statement = json.loads(_manifest(["a", "b"]).to_payload())
    target = statement
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(FormatError, match=message):
        parse_statement(json.dumps(statement).encode())


def test_caller_mistakes_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Serialization("tensors", "sha256")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Serialization("shards", "sha256")
    with pytest.raises(ValueError):
        Serialization("files", "md5")
    with pytest.raises(ValueError):
        _manifest(["a", "a"])


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    try:
        parse_statement(data)
    except FormatError:
        pass


@settings(max_examples=30, deadline=None)
@given(
    names=st.lists(
        st.text(alphabet="ab/-.:", min_size=1, max_size=8).filter(
            lambda s: not s.startswith("/") and not s.endswith("/") and "//" not in s
        ),
        min_size=1,
        max_size=8,
        unique=True,
    )
)
def test_round_trip_any_names(names: list[str]) -> None:
    manifest = _manifest(names)
    assert parse_statement(manifest.to_payload()) == manifest
