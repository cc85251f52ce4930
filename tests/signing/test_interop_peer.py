"""Interoperability with the real model-signing 1.1 package, both directions.

Key and certificate methods x files and shards x sha256, blake2, blake3, with ignored paths;
plus a tree whose component order differs from code-point order (``a/b`` vs ``a-c``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import model_signing
import pytest
from _pki import Pki
from tests.signing.conftest import make_model

from weightvault.oms.manifest import component_key
from weightvault.signing import check, digest, sign
from weightvault.signing.certificate import CertificateSigner, CertificateVerifier
from weightvault.signing.key import KeySigner, KeyVerifier

SHARD = 100_000  # small shards so the test model has several per file


def _peer_hashing(serialization: str, hash_type: str, ignore: list[str]) -> object:
    config = model_signing.hashing.Config().set_ignored_paths(paths=[*ignore, "model.sig"])
    if serialization == "shards":
        config.use_shard_serialization(hashing_algorithm=hash_type, shard_size=SHARD)
    else:
        config.use_file_serialization(hashing_algorithm=hash_type)
    return config


def _add_ignored(model: Path) -> list[str]:
    (model / "notes.txt").write_text("not signed")
    (model / "cache").mkdir()
    (model / "cache" / "tmp.bin").write_bytes(b"scratch")
    return ["notes.txt", "cache"]


CASES = [
    (method, serialization, hash_type)
    for method in ("key", "certificate")
    for serialization in ("files", "shards")
    for hash_type in ("sha256", "blake2", "blake3")
]


@pytest.mark.parametrize(("method", "serialization", "hash_type"), CASES)
def test_weightvault_signs_model_signing_verifies(
    tmp_path: Path,
    keypair: tuple[Path, Path],
    pki: Pki,
    method: str,
    serialization: str,
    hash_type: str,
) -> None:
    model = make_model(tmp_path / "model")
    ignore = _add_ignored(model)
    if method == "key":
        signer = KeySigner.from_file(keypair[0])
    else:
        signer = CertificateSigner.from_files(pki.leaf_key, pki.leaf, [pki.chain])
    sign(
        model,
        signer,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=SHARD,
        ignore_paths=[model / p for p in ignore],
    )
    config = model_signing.verifying.Config()
    if method == "key":
        config.use_elliptic_key_verifier(public_key=keypair[1])
    else:
        config.use_certificate_verifier(certificate_chain=[pki.root])
    config.set_hashing_config(_peer_hashing(serialization, hash_type, ignore))
    config.verify(model, model / "model.sig")  # raises on any mismatch

    # And the peer notices a change.
    (model / "config.json").write_text('{"hidden_size": 65}')
    with pytest.raises(ValueError):
        config.verify(model, model / "model.sig")


@pytest.mark.parametrize(("method", "serialization", "hash_type"), CASES)
def test_model_signing_signs_weightvault_verifies(
    tmp_path: Path,
    keypair: tuple[Path, Path],
    pki: Pki,
    method: str,
    serialization: str,
    hash_type: str,
) -> None:
    model = make_model(tmp_path / "model")
    ignore = _add_ignored(model)
    config = model_signing.signing.Config()
    if method == "key":
        config.use_elliptic_key_signer(private_key=keypair[0])
        verifier: KeyVerifier | CertificateVerifier = KeyVerifier.from_file(keypair[1])
    else:
        config.use_certificate_signer(
            private_key=pki.leaf_key, signing_certificate=pki.leaf, certificate_chain=[pki.chain]
        )
        verifier = CertificateVerifier.from_file(pki.root, identity=pki.email)
    config.set_hashing_config(_peer_hashing(serialization, hash_type, ignore))
    config.sign(model, model / "model.sig")

    result = check(model, None, verifier)
    assert result.ok, result.problems()
    assert result.manifest is not None
    ours = digest(
        model,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=SHARD,
        ignore_paths=[model / p for p in ignore],
    )
    # Same model + same options => the same resource digests and root digest.
    assert [(r.name, r.digest) for r in ours.resources] == [
        (r.name, r.digest) for r in result.manifest.resources
    ]
    assert ours.root_digest == result.manifest.root_digest

    (model / "sub" / "adapter.bin").write_bytes(b"tampered")
    result = check(model, None, verifier)
    assert not result.ok
    assert result.changed == ("sub/adapter.bin",)


def _tricky_tree(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "w.bin").write_bytes(b"deep weights")
    (root / "a-c").write_bytes(b"dash")
    (root / "a.txt").write_bytes(b"dot")
    (root / "a0").write_bytes(b"zero")
    return root


def _payload(signature: Path) -> dict[str, object]:
    bundle = json.loads(signature.read_bytes())
    doc: dict[str, object] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return doc


@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_component_order_matches_the_peer(
    tmp_path: Path, keypair: tuple[Path, Path], serialization: str
) -> None:
    ours = _tricky_tree(tmp_path / "ours")
    peers = _tricky_tree(tmp_path / "peers")
    sign(ours, KeySigner.from_file(keypair[0]), serialization=serialization, shard_size=SHARD)
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=keypair[0])
    config.set_hashing_config(_peer_hashing(serialization, "sha256", []))
    config.sign(peers, peers / "model.sig")

    mine, theirs = _payload(ours / "model.sig"), _payload(peers / "model.sig")
    names = [r["name"] for r in mine["predicate"]["resources"]]  # type: ignore[index]
    assert names == [r["name"] for r in theirs["predicate"]["resources"]]  # type: ignore[index]
    assert names[0].startswith("a/b/w.bin")
    assert mine["subject"][0]["digest"] == theirs["subject"][0]["digest"]  # type: ignore[index]
    # Both verify each other's signature.
    assert check(peers, None, KeyVerifier.from_file(keypair[1])).ok


def test_code_point_order_is_accepted_on_verify(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    """A signer following the spec text (plain code-point order) must verify too."""
    from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
    from weightvault.oms.manifest import Manifest

    model = _tricky_tree(tmp_path / "m")
    manifest = digest(model)
    reordered = Manifest(
        manifest.model_name,
        tuple(sorted(manifest.resources, key=lambda r: r.name)),
        manifest.serialization,
    )
    assert [r.name for r in reordered.resources] != [r.name for r in manifest.resources]
    assert reordered.root_digest != manifest.root_digest
    signer = KeySigner.from_file(keypair[0])
    (model / "model.sig").write_bytes(signer.sign(INTOTO_PAYLOAD_TYPE, reordered.to_payload()))
    assert check(model, None, KeyVerifier.from_file(keypair[1])).ok
    assert sorted(manifest.resources, key=lambda r: component_key(r.name)) == list(
        manifest.resources
    )


def test_single_file_model_both_directions(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(bytes(range(256)) * 500)
    sign(weights, KeySigner.from_file(keypair[0]), signature_path=tmp_path / "wv.sig")
    peer_verify = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keypair[1])
    peer_verify.set_hashing_config(model_signing.hashing.Config())
    peer_verify.verify(weights, tmp_path / "wv.sig")

    peer_sign = model_signing.signing.Config().use_elliptic_key_signer(private_key=keypair[0])
    peer_sign.sign(weights, tmp_path / "peer.sig")
    result = check(weights, tmp_path / "peer.sig", KeyVerifier.from_file(keypair[1]))
    assert result.ok
    assert result.manifest is not None
    assert [r.name for r in result.manifest.resources] == ["."]
    assert result.manifest.model_name == "weights.safetensors"
