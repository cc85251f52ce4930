"""The public API's seams: prepare without writing, atomic write, results, re-exports."""

from __future__ import annotations

import json
from pathlib import Path

import weightvault
from weightvault.oms.bundle import parse_bundle
from weightvault.oms.manifest import parse_statement
from weightvault.signing import prepare_signature, write_signature
from weightvault.signing.key import KeySigner, KeyVerifier


def test_prepare_signature_writes_nothing(model: Path, keypair: tuple[Path, Path]) -> None:
    before = sorted(p.name for p in model.iterdir())
    signed = prepare_signature(model, KeySigner.from_file(keypair[0]))
    assert sorted(p.name for p in model.iterdir()) == before
    bundle = parse_bundle(signed.bundle_json)
    assert bundle.payload == signed.payload
    assert parse_statement(signed.payload) == signed.manifest
    # model.sig is recorded as ignored even though it does not exist yet.
    assert "model.sig" in (signed.manifest.serialization.ignore_paths or ())
    target = write_signature(signed, model / "model.sig")
    assert target.read_bytes() == signed.bundle_json
    assert weightvault.check(model, None, KeyVerifier.from_file(keypair[1])).ok


def test_results_serialize_to_json(model: Path, keypair: tuple[Path, Path]) -> None:
    signed = weightvault.sign(model, weightvault.KeySigner.from_file(keypair[0]))
    doc = json.loads(json.dumps(signed.to_json()))
    assert doc["root_digest"] == signed.manifest.root_digest.hex()
    assert doc["signer"]["method"] == "key"
    result = weightvault.verify(model, None, weightvault.KeyVerifier.from_file(keypair[1]))
    assert isinstance(result, weightvault.VerificationResult)
    assert result.to_json()["ok"] is True
    assert result.summary().endswith("signature OK")
    assert result.problems() == []


def test_resigning_replaces_the_signature(model: Path, keypair: tuple[Path, Path]) -> None:
    signer = KeySigner.from_file(keypair[0])
    weightvault.sign(model, signer, hash_type="sha256")
    first = (model / "model.sig").read_bytes()
    weightvault.sign(model, signer, hash_type="blake3")
    second = (model / "model.sig").read_bytes()
    assert first != second
    assert not [p for p in model.iterdir() if ".wvtmp-" in p.name]
    manifest = parse_statement(parse_bundle(second).payload)
    assert manifest.serialization.hash_type == "blake3"
