"""The 9 key and certificate signatures model-signing produced over its history.

Each must verify, and must stop verifying after any change to a signed file. (The 4 Sigstore
ones are covered by the Sigstore method's tests.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY

from weightvault.signing import check
from weightvault.signing.certificate import CertificateVerifier
from weightvault.signing.key import KeyVerifier

FOLDERS = [
    "v0.3.1-elliptic-key",
    "v1.0.0-elliptic-key",
    "v1.0.1-elliptic-key",
    "v1.1.0-elliptic-key",
    "v0.2.0-certificate",
    "v0.3.1-certificate",
    "v1.0.0-certificate",
    "v1.0.1-certificate",
    "v1.1.0-certificate",
]

pytestmark = pytest.mark.skipif(
    not HISTORY.is_dir(),
    reason=f"shared fixtures absent ({HISTORY}); they live beside the checkout",
)


def _copy(folder: str, tmp_path: Path) -> Path:
    target = tmp_path / folder
    shutil.copytree(HISTORY / folder, target)
    return target


def _model_and_verifier(copy: Path) -> tuple[Path, KeyVerifier | CertificateVerifier]:
    keys = HISTORY / "keys"
    if "elliptic-key" in copy.name:
        verifier: KeyVerifier | CertificateVerifier = KeyVerifier.from_file(
            keys / "signing-key-pub.pem"
        )
    else:
        # The historical certificates name no identity worth pinning: any signer under the CA.
        verifier = CertificateVerifier.from_file(keys / "ca-cert.pem", unsafe_no_identity=True)
    # v0.3.1 and v1.0.0 signed a single file (one resource named ".").
    single = sorted(p for p in copy.iterdir() if p.name not in ("model.sig", "ignore-me"))
    model = single[0] if len(single) == 1 else copy
    return model, verifier


@pytest.mark.parametrize("folder", FOLDERS)
def test_historical_signature_verifies(folder: str, tmp_path: Path) -> None:
    copy = _copy(folder, tmp_path)
    model, verifier = _model_and_verifier(copy)
    result = check(model, copy / "model.sig", verifier, ignore_paths=[copy / "ignore-me"])
    assert result.ok, result.problems()
    assert result.signer is not None
    assert result.signer.method in ("key", "certificate")


@pytest.mark.parametrize("folder", FOLDERS)
def test_historical_signature_rejects_each_changed_file(folder: str, tmp_path: Path) -> None:
    copy = _copy(folder, tmp_path)
    model, verifier = _model_and_verifier(copy)
    signed_files = [model] if model.is_file() else sorted(model.glob("signme-*"))
    assert signed_files
    for target in signed_files:
        original = target.read_bytes()
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]) if original else b"x")
        result = check(model, copy / "model.sig", verifier, ignore_paths=[copy / "ignore-me"])
        assert not result.ok
        expected = "." if model.is_file() else target.name
        assert result.changed == (expected,)
        target.write_bytes(original)
    assert check(model, copy / "model.sig", verifier, ignore_paths=[copy / "ignore-me"]).ok


def test_ignored_file_is_really_not_covered(tmp_path: Path) -> None:
    copy = _copy("v1.1.0-elliptic-key", tmp_path)
    model, verifier = _model_and_verifier(copy)
    (copy / "ignore-me").write_text("anything")
    assert check(model, copy / "model.sig", verifier).ok  # recorded in the signature
    copy_old = _copy("v1.0.1-elliptic-key", tmp_path)
    model_old, verifier_old = _model_and_verifier(copy_old)
    # v1.0.1 did not record ignored paths: without --ignore the file is reported as extra.
    result = check(model_old, copy_old / "model.sig", verifier_old)
    assert result.extra == ("ignore-me",)


def test_fixture_key_does_not_verify_certificate_signature(tmp_path: Path) -> None:
    copy = _copy("v1.1.0-certificate", tmp_path)
    verifier = KeyVerifier.from_file(HISTORY / "keys" / "signing-key-pub.pem")
    result = check(copy, None, verifier, ignore_paths=[copy / "ignore-me"])
    assert not result.ok
    assert result.signature_error is not None
    assert "certificate" in result.signature_error
