"""``keygen``, ``sign --force``, signature files left out of a signature, ``verify
--ignore-unsigned-files`` and ``--unsafe-no-identity``, against the real ``model-signing`` peer
where it has the same feature."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import model_signing
import pytest
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY
from tests.paths import OFFLINE_TRUST_CONFIG

from weightvault.cli.app import run


def _model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(30_000))
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub").mkdir()
    (root / "sub" / "adapter.bin").write_bytes(b"\x02" * 500)
    return root


def _line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    assert run(["keygen", "-o", str(tmp_path / "key.pem")]) == 0
    capsys.readouterr()
    return tmp_path / "key.pem", tmp_path / "key.pub"


# --- keygen ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"])
def test_keygen_keys_sign_here_and_verify_with_model_signing_and_back(
    tmp_path: Path, key_type: str, capsys: pytest.CaptureFixture[str]
) -> None:
    private = tmp_path / "k.pem"
    assert run(["keygen", "-o", str(private), "--type", key_type, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    public = Path(doc["public_key_file"])
    assert public == tmp_path / "k.pub" and not doc["encrypted"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(private)]) == 0
    assert doc["fingerprint"][:16] in capsys.readouterr().out  # the signer the bundle names
    peer = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public)
    peer.verify(model, model / "model.sig")  # raises on any mismatch
    # And the peer signs with the same generated key; weightvault verifies.
    other = _model(tmp_path / "m2")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(other, other / "model.sig")
    assert run(["verify", str(other), "--key", str(public)]) == 0


def test_keygen_passphrase_file_refusals_and_ed25519_approval_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse battery staple\n")
    private = tmp_path / "enc.pem"
    assert run(["keygen", "-o", str(private), "--passphrase-file", str(secret)]) == 0
    assert "encrypted" in capsys.readouterr().out
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(private)]) == 2
    assert "give its --password" in _line(capsys.readouterr().err)
    assert run(["sign", str(model), "--key", str(private), "--password-file", str(secret)]) == 0
    capsys.readouterr()
    # Never overwritten without --force, and then both files change.
    before = private.read_bytes()
    assert run(["keygen", "-o", str(private)]) == 2
    assert "pass --force to overwrite it" in _line(capsys.readouterr().err)
    assert private.read_bytes() == before
    assert run(["keygen", "-o", str(private), "--force"]) == 0
    assert private.read_bytes() != before
    capsys.readouterr()
    # Ed25519: for approvals (read unencrypted), so a passphrase is refused; not a model key.
    approval = tmp_path / "alice.pem"
    ed25519 = ["keygen", "-o", str(approval), "-t", "ed25519"]
    assert run([*ed25519, "--passphrase-file", str(secret)]) == 2
    assert "read unencrypted" in _line(capsys.readouterr().err)
    assert not approval.exists() and not (tmp_path / "alice.pub").exists()
    assert run(ed25519) == 0
    from weightvault.custody.approvals import load_approval_signer, load_public_key_bytes

    signer = load_approval_signer(approval, None)
    assert signer is not None
    assert len(load_public_key_bytes((tmp_path / "alice.pub").read_bytes(), "alice.pub")) == 32
    capsys.readouterr()
    assert run(["sign", str(model), "--key", str(approval), "--force"]) == 2
    assert "not an elliptic-curve key" in _line(capsys.readouterr().err)
    asks = ["keygen", "-o", str(tmp_path / "asked.pem"), "--passphrase"]
    assert run(asks) == 2  # no terminal here to ask on
    assert "--passphrase-file" in _line(capsys.readouterr().err)
    assert run([*asks, "--passphrase-file", str(secret)]) == 2
    assert "exclusive" in _line(capsys.readouterr().err)
    same = str(tmp_path / "x.pem")
    assert run(["keygen", "-o", same, "-t", "rsa"]) == 2
    assert run(["keygen", "-o", same, "--public-out", same]) == 2


# --- sign: never overwrite, never sign a signature --------------------------------------------


def test_sign_refuses_to_replace_a_signature_without_force(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(keys[0])]) == 0
    first = (model / "model.sig").read_bytes()
    capsys.readouterr()
    assert run(["sign", str(model), "--key", str(keys[0])]) == 2
    assert _line(capsys.readouterr().err) == (
        f"error: {model / 'model.sig'}: already exists; pass --force to overwrite it"
    )
    assert (model / "model.sig").read_bytes() == first
    assert run(["sign", str(model), "--key", str(keys[0]), "--force"]) == 0
    assert (model / "model.sig").read_bytes() != first  # ECDSA signatures are randomized
    assert run(["verify", str(model), "--key", str(keys[1])]) == 0


def test_an_older_signature_in_the_model_is_left_out_and_the_peer_agrees(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(keys[0])]) == 0  # model/model.sig
    (model / "sub" / "release.sigstore.json").write_bytes((model / "model.sig").read_bytes())
    capsys.readouterr()
    new = tmp_path / "new.sig"
    assert run(["sign", str(model), "--key", str(keys[0]), "--signature", str(new)]) == 0
    out = capsys.readouterr().out
    assert "left out: model.sig (a signature file, not model content)" in out
    assert "left out: sub/release.sigstore.json" in out
    assert "(3 resources," in out  # weights, config, adapter: no signature among them
    # The left-out files are recorded as ignored: replacing them changes nothing, for either tool.
    (model / "model.sig").write_text("{}")
    assert run(["verify", str(model), "--key", str(keys[1]), "--signature", str(new)]) == 0
    peer = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1])
    peer.verify(model, new)
    # JSON names them too; digest (what a signature would hold) agrees with the signature.
    (model / "model.sig").unlink()
    capsys.readouterr()
    assert run(["sign", str(model), "--key", str(keys[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["left_out"] == ["sub/release.sigstore.json"]


def test_a_signature_is_never_signed_as_a_model_or_overwritten_by_one(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(keys[0])]) == 0
    capsys.readouterr()
    signature = model / "model.sig"
    sig_out = ["--signature", str(tmp_path / "sig-of-sig")]
    assert run(["sign", str(signature), "--key", str(keys[0]), *sig_out]) == 2
    assert "is a signature (a Sigstore bundle), not a model" in _line(capsys.readouterr().err)
    weights = model / "weights.bin"
    original = weights.read_bytes()
    assert run(["sign", str(weights), "--key", str(keys[0]), "--signature", str(weights),
                "--force"]) == 2
    assert "would overwrite the model it signs" in _line(capsys.readouterr().err)
    assert weights.read_bytes() == original
    # A JSON file that merely mentions the media type is model content, and is signed.
    (model / "notes.json").write_text('{"about": "application/vnd.dev.sigstore.bundle"}')
    assert run(["sign", str(model), "--key", str(keys[0]), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resources"] == 4


# --- verify --ignore-unsigned-files -------------------------------------------------------------


def test_ignore_unsigned_files_checks_every_signed_file_only(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path / "m")
    assert run(["sign", str(model), "--key", str(keys[0])]) == 0
    (model / "added.txt").write_text("not part of the release")
    os.symlink("weights.bin", model / "link.bin")
    capsys.readouterr()
    verify = ["verify", str(model), "--key", str(keys[1])]
    assert run(verify) == 1
    capsys.readouterr()
    assert run([*verify, "--ignore-unsigned-files"]) == 0
    out = capsys.readouterr().out
    assert "signature OK" in out
    assert "not signed, not checked: added.txt" in out
    assert "not signed, not checked: link.bin" in out
    assert run([*verify, "--ignore-unsigned-files", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["extra"] == [] and doc["unsigned_ignored"] == ["added.txt", "link.bin"]
    # Signed files are still all checked: a change or a removal fails.
    (model / "config.json").write_text('{"layers": 3}')
    assert run([*verify, "--ignore-unsigned-files"]) == 1
    assert "changed: config.json" in capsys.readouterr().out
    (model / "config.json").write_text('{"layers": 2}')
    (model / "sub" / "adapter.bin").unlink()
    assert run([*verify, "--ignore-unsigned-files"]) == 1
    assert "missing: sub/adapter.bin" in capsys.readouterr().out


def test_ignore_unsigned_files_matches_model_signing_both_ways(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _model(tmp_path / "ours")
    assert run(["sign", str(ours), "--key", str(keys[0])]) == 0
    (ours / "added.txt").write_text("later")
    peer = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1])
    with pytest.raises(ValueError, match="Extra files"):
        peer.verify(ours, ours / "model.sig")
    peer.set_ignore_unsigned_files(True).verify(ours, ours / "model.sig")

    theirs = _model(tmp_path / "theirs")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys[0]).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(theirs, theirs / "model.sig")
    (theirs / "added.txt").write_text("later")
    capsys.readouterr()
    assert run(["verify", str(theirs), "--key", str(keys[1])]) == 1
    assert run(["verify", str(theirs), "--key", str(keys[1]), "--ignore-unsigned-files"]) == 0
    (theirs / "weights.bin").write_bytes(b"changed")
    assert run(["verify", str(theirs), "--key", str(keys[1]), "--ignore-unsigned-files"]) == 1
    with pytest.raises(ValueError, match="Hash mismatch"):
        model_signing.verifying.Config().use_elliptic_key_verifier(
            public_key=keys[1]
        ).set_ignore_unsigned_files(True).verify(theirs, theirs / "model.sig")


# --- Sigstore without an identity policy -------------------------------------------------------


@pytest.mark.skipif(
    not OFFLINE_TRUST_CONFIG.is_file(), reason=f"shared fixtures absent ({HISTORY})"
)
def test_sigstore_without_identity_needs_the_explicit_opt_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = HISTORY / "v1.1.0-sigstore"
    base = ["verify", str(model), "--sigstore", "--trust-config", str(OFFLINE_TRUST_CONFIG)]
    assert run(base) == 2
    assert "--unsafe-no-identity" in _line(capsys.readouterr().err)
    assert run([*base, "--unsafe-no-identity", "--json"]) == 0
    signer = json.loads(capsys.readouterr().out)["signer"]
    assert signer["subject"] == "stefanb@us.ibm.com (identity not checked)"
    assert run([*base, "--unsafe-no-identity", "--issuer", "https://x.example"]) == 2
    assert "cannot go with --identity or --issuer" in _line(capsys.readouterr().err)
