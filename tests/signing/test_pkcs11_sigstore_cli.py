"""The sign/verify CLI with --pkcs11-uri (real SoftHSM2 token) and --sigstore (offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY
from tests.paths import OFFLINE_TRUST_CONFIG as TRUST_CONFIG
from tests.softhsm import SoftHsmToken, make_isolated_token, make_token

from weightvault.cli.app import run
from weightvault.keys import pkcs11 as p11

IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"
needs_fixtures = pytest.mark.skipif(
    not TRUST_CONFIG.is_file(), reason=f"shared fixtures not present at {HISTORY}"
)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    hsm = make_isolated_token(tmp_path, monkeypatch, "models", pin="4321")
    monkeypatch.setenv(p11.PIN_ENV, hsm.pin)
    return hsm


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden": 8}\n')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 300)
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return root


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_sign_on_token_verify_from_token_key_file_and_model_signing(
    token: SoftHsmToken, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token.generate_ec_key("release", curve="P-384")
    private_uri = token.uri_for("release", type="private", with_pin=False)
    code, out, err = _cli(capsys, "sign", str(model), "--pkcs11-uri", private_uri)
    assert code == 0, err
    assert "signer: pkcs11 pkcs11:token=models;object=release;type=private" in out
    assert (model / "model.sig").is_file()

    public_uri = token.uri_for("release", with_pin=False)
    code, out, err = _cli(capsys, "verify", str(model), "--pkcs11-uri", public_uri)
    assert code == 0, err
    assert "signature OK" in out

    public_pem = tmp_path / "release.pub.pem"
    public_pem.write_bytes(token.public_key_pem("release"))
    code, out, err = _cli(capsys, "verify", str(model), "--key", str(public_pem), "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] is True

    peer = subprocess.run(
        [
            str(Path(sys.executable).parent / "model_signing"),
            "verify",
            "key",
            "--signature",
            str(model / "model.sig"),
            "--public_key",
            str(public_pem),
            str(model),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert peer.returncode == 0, peer.stdout + peer.stderr
    assert "Verification succeeded" in peer.stdout + peer.stderr

    # Tamper: verify exits 1 and names the file, by token key and by key file.
    (model / "tokenizer" / "vocab.txt").write_text("a\nB\n")
    for method in (["--pkcs11-uri", public_uri], ["--key", str(public_pem)]):
        code, out, err = _cli(capsys, "verify", str(model), *method)
        assert code == 1
        assert "changed: tokenizer/vocab.txt" in out + err


def test_token_problems_exit_2_with_one_line_and_no_signature(
    token: SoftHsmToken,
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token.generate_ec_key("release")
    token.generate_ed25519_key("checkpoints")
    cases = [
        (token.uri_for("release", with_pin=False) + "?pin-value=98765", "wrong PIN"),
        (token.uri_for("nothing", with_pin=False), "key not found"),
        (token.uri_for("checkpoints", with_pin=False), "is an Ed25519 key"),
        ("pkcs11:token=elsewhere;object=release", "token not found"),
        (
            token.uri_for("release", with_pin=False) + f"?module-path={tmp_path}/missing.so",
            "module not found",
        ),
        ("pkcs11:token=models;object=release;flavour=mint", "'flavour'"),
        ("models/release", "not a PKCS#11 URI"),
    ]
    for uri, expected in cases:
        code, out, err = _cli(capsys, "sign", str(model), "--pkcs11-uri", uri)
        line = _one_line_error(err)
        assert code == 2, line
        assert expected in line
        assert "98765" not in out + err
        assert not (model / "model.sig").exists()
    monkeypatch.delenv(p11.PIN_ENV)
    code, _, err = _cli(
        capsys, "sign", str(model), "--pkcs11-uri", token.uri_for("release", with_pin=False)
    )
    assert code == 2 and "needs the user PIN" in _one_line_error(err)


def test_signature_from_another_tokens_key_exits_1(
    token: SoftHsmToken, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intruder = make_token(tmp_path, "intruder", pin="4321")
    token.generate_ec_key("release")
    intruder.generate_ec_key("release")
    code, _, err = _cli(
        capsys, "sign", str(model), "--pkcs11-uri", intruder.uri_for("release", with_pin=False)
    )
    assert code == 0, err
    code, out, err = _cli(
        capsys, "verify", str(model), "--pkcs11-uri", token.uri_for("release", with_pin=False)
    )
    assert code == 1
    assert "different key" in out + err


@needs_fixtures
@pytest.mark.parametrize("version", ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"])
def test_peer_sigstore_signatures_through_the_cli(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = HISTORY / f"{version}-sigstore"
    ignore = ["--ignore", str(source / "ignore-me")] if (source / "ignore-me").exists() else []
    base = ["--sigstore", "--identity", IDENTITY, "--issuer", ISSUER, "--trust-config"]
    code, out, err = _cli(capsys, "verify", str(source), *base, str(TRUST_CONFIG), *ignore)
    assert code == 0, err
    assert f"signer: sigstore {IDENTITY}" in out

    code, out, err = _cli(
        capsys,
        "verify",
        str(source),
        "--sigstore",
        "--identity",
        "mallory@example.com",
        "--issuer",
        ISSUER,
        "--trust-config",
        str(TRUST_CONFIG),
        *ignore,
    )
    assert code == 1
    assert "SANs do not match" in out + err

    copy = tmp_path / version
    shutil.copytree(source, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    (copy / "signme-1").write_bytes(b"tampered")
    ignore = ["--ignore", str(copy / "ignore-me")] if (copy / "ignore-me").exists() else []
    code, out, err = _cli(capsys, "verify", str(copy), *base, str(TRUST_CONFIG), *ignore)
    assert code == 1
    assert "changed: signme-1" in out + err


@needs_fixtures
def test_sigstore_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = HISTORY / "v1.1.0-sigstore"
    code, _, err = _cli(capsys, "verify", str(source), "--sigstore", "--identity", IDENTITY)
    assert code == 2 and "--issuer" in _one_line_error(err)
    broken = tmp_path / "trust.json"
    broken.write_text("{}")
    code, _, err = _cli(
        capsys,
        "verify",
        str(source),
        "--sigstore",
        "--identity",
        IDENTITY,
        "--issuer",
        ISSUER,
        "--trust-config",
        str(broken),
    )
    assert code == 2 and "trust config" in _one_line_error(err)


@needs_fixtures
def test_sigstore_sign_without_a_token_exits_2(
    model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    for name in (
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "GITHUB_ACTIONS",
    ):
        monkeypatch.delenv(name, raising=False)
    code, _, err = _cli(
        capsys, "sign", str(model), "--sigstore", "--trust-config", str(TRUST_CONFIG)
    )
    assert code == 2
    assert "identity token" in _one_line_error(err)
    assert not (model / "model.sig").exists()
