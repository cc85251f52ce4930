"""PKCS#11 and Sigstore methods through the model-level API (weightvault.signing.sign/verify)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import pytest
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY
from tests.paths import OFFLINE_TRUST_CONFIG as TRUST_CONFIG
from tests.softhsm import SoftHsmToken, make_token

from weightvault.errors import VerificationError
from weightvault.signing import check, sign, verify
from weightvault.signing.key import KeyVerifier
from weightvault.signing.pkcs11 import Pkcs11Signer, Pkcs11Verifier
from weightvault.signing.sigstore import SigstoreVerifier

IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"
needs_fixtures = pytest.mark.skipif(
    not TRUST_CONFIG.is_file(),
    reason=f"shared fixtures not present at {HISTORY}",
)


def _model(root: Path) -> Path:
    model = root / "model"
    (model / "nested").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}\n')
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 512)
    (model / "nested" / "vocab.txt").write_text("hello\nworld\n")
    return model


@pytest.mark.parametrize(
    ("hash_type", "serialization"), [("sha256", "files"), ("blake2", "shards")]
)
def test_model_signed_on_the_token_verifies_everywhere(
    token: SoftHsmToken, tmp_path: Path, hash_type: str, serialization: str
) -> None:
    from model_signing import hashing, verifying

    uri = token.generate_ec_key("release", curve="P-384")
    model = _model(tmp_path)
    result = sign(
        model,
        Pkcs11Signer.from_uri(uri),
        hash_type=hash_type,
        serialization=serialization,
        shard_size=4096 if serialization == "shards" else None,
    )
    public_pem = tmp_path / "release.pub"
    public_pem.write_bytes(token.public_key_pem("release"))
    # weightvault: the PKCS#11 verifier (PEM or token) and the plain key method agree.
    for verifier in (
        Pkcs11Verifier.from_public_key_file(public_pem),
        Pkcs11Verifier.from_uri(uri),
        KeyVerifier.from_file(public_pem),
    ):
        assert verify(model, result.signature_path, verifier).ok
    # The real model-signing package, with its elliptic-key verifier and matching hashing.
    config = verifying.Config()  # type: ignore[no-untyped-call]
    hashing_config = hashing.Config()  # type: ignore[no-untyped-call]
    if serialization == "shards":
        hashing_config.use_shard_serialization(
            hashing_algorithm=cast(Any, hash_type), shard_size=4096
        )
    else:
        hashing_config.use_file_serialization(hashing_algorithm=cast(Any, hash_type))
    hashing_config.set_ignored_paths(paths=["model.sig"])
    config.use_elliptic_key_verifier(public_key=public_pem).set_hashing_config(
        hashing_config
    ).verify(model, result.signature_path)
    # A changed file is named by weightvault and refused by the peer.
    (model / "nested" / "vocab.txt").write_text("hello\nw0rld\n")
    outcome = check(model, result.signature_path, Pkcs11Verifier.from_uri(uri))
    assert not outcome.ok
    assert any("nested/vocab.txt" in name for name in outcome.changed)
    with pytest.raises(ValueError):
        config.verify(model, result.signature_path)


def test_model_signed_by_another_tokens_key_is_rejected(
    token: SoftHsmToken, tmp_path: Path
) -> None:
    other = make_token(tmp_path, "intruder")
    mine = token.generate_ec_key("release")
    theirs = other.generate_ec_key("release")
    model = _model(tmp_path)
    result = sign(model, Pkcs11Signer.from_uri(theirs))
    outcome = check(model, result.signature_path, Pkcs11Verifier.from_uri(mine))
    assert not outcome.ok
    assert outcome.signature_error is not None and "different key" in outcome.signature_error
    with pytest.raises(VerificationError):
        verify(model, result.signature_path, Pkcs11Verifier.from_uri(mine))


@needs_fixtures
@pytest.mark.parametrize("version", ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"])
def test_peer_sigstore_models_verify_and_changes_are_caught(tmp_path: Path, version: str) -> None:
    verifier = SigstoreVerifier(IDENTITY, ISSUER, trust_config=TRUST_CONFIG)
    source = HISTORY / f"{version}-sigstore"
    ignore = [source / "ignore-me"] if (source / "ignore-me").exists() else []
    result = verify(source, source / "model.sig", verifier, ignore_paths=ignore)
    assert result.ok
    assert result.signer is not None and result.signer.subject == IDENTITY
    # A copy with one signed byte changed fails, naming the file.
    copy = tmp_path / version
    shutil.copytree(source, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    data = bytearray((copy / "signme-2").read_bytes())
    data[0] ^= 0x01
    (copy / "signme-2").write_bytes(bytes(data))
    ignore = [copy / "ignore-me"] if (copy / "ignore-me").exists() else []
    outcome = check(copy, copy / "model.sig", verifier, ignore_paths=ignore)
    assert not outcome.ok
    assert outcome.changed == ("signme-2",)
    # A file added beside the signed ones is reported too.
    (copy / "signme-2").write_bytes((source / "signme-2").read_bytes())
    (copy / "extra.bin").write_bytes(b"new")
    outcome = check(copy, copy / "model.sig", verifier, ignore_paths=ignore)
    assert outcome.extra == ("extra.bin",)
    assert outcome.changed == ()
