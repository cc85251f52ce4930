"""``weightvault sign`` / ``verify`` / ``digest``: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY

from weightvault.cli.app import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "signing"))
from _pki import Pki, build_pki


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli-keys")
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    public = folder / "key.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture(scope="module")
def cli_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("cli-pki"))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(20000))
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "extra.bin").write_bytes(b"\x01" * 100)
    return root


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_sign_then_verify(
    model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["sign", str(model), "--key", str(keys[0]), "--password", "pw"]) == 0
    out = capsys.readouterr().out
    assert "root digest: sha256:" in out
    assert (model / "model.sig").is_file()
    assert run(["verify", str(model), "--key", str(keys[1])]) == 0
    assert "signature OK" in capsys.readouterr().out


def test_verify_mismatch_exits_1_naming_files(
    model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["sign", str(model), "--key", str(keys[0]), "--password", "pw"]) == 0
    capsys.readouterr()
    (model / "config.json").write_text('{"layers": 3}')
    (model / "sub" / "extra.bin").unlink()
    (model / "new.py").write_text("x")
    assert run(["verify", str(model), "--key", str(keys[1])]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "changed: config.json",
        "missing: sub/extra.bin",
        "extra: new.py",
    ]
    line = _one_line_error(captured.err)
    assert "changed: config.json" in line and "missing: sub/extra.bin" in line

    assert run(["verify", str(model), "--key", str(keys[1]), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["changed"] == ["config.json"]
    assert doc["missing"] == ["sub/extra.bin"]
    assert doc["extra"] == ["new.py"]


def test_json_outputs(
    model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env_password = {"WEIGHTVAULT_KEY_PASSWORD": "pw"}
    os.environ.update(env_password)
    try:
        assert run(["sign", str(model), "--key", str(keys[0]), "--json", "--hash", "blake2"]) == 0
    finally:
        del os.environ["WEIGHTVAULT_KEY_PASSWORD"]
    signed = json.loads(capsys.readouterr().out)
    assert signed["serialization"]["hash_type"] == "blake2b"
    assert signed["resources"] == 3
    assert run(["verify", str(model), "--key", str(keys[1]), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["ok"] is True
    assert verified["root_digest"] == signed["root_digest"]
    assert run(["digest", str(model), "--json", "--hash", "blake2"]) == 0
    digested = json.loads(capsys.readouterr().out)
    assert digested["root_digest"] == signed["root_digest"]
    assert [r["name"] for r in digested["resources"]] == [
        "config.json",
        "model.safetensors",
        "sub/extra.bin",
    ]


def test_digest_text(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["digest", str(model), "--serialization", "shards", "--shard-size", "8192"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("root digest: sha256:")
    assert "(5 resources, shards/sha256)" in lines[0]
    assert lines[1].endswith("  config.json:0:13")
    assert len(lines) == 6


def test_certificate_method(model: Path, cli_pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    pki = cli_pki
    argv = ["sign", str(model), "--key", str(pki.leaf_key), "--certificate", str(pki.leaf)]
    assert run([*argv, "--chain", str(pki.chain)]) == 0
    assert run(["verify", str(model), "--trust-root", str(pki.root), "--identity", pki.email]) == 0
    assert pki.email in capsys.readouterr().out
    other = ["verify", str(model), "--trust-root", str(pki.other_root)]
    assert run([*other, "--identity", pki.email]) == 1
    assert "does not validate against the trust roots" in _one_line_error(capsys.readouterr().err)
    assert run(["verify", str(model), "--trust-root", str(pki.root), "--identity", "x@y"]) == 1
    assert "expected identity x@y" in _one_line_error(capsys.readouterr().err)


def test_certificate_verification_needs_an_identity_or_an_explicit_opt_out(
    model: Path, cli_pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trust root vouches for many signers: no --identity is refused (exit 2) unless the
    user writes --unsafe-no-identity, which then accepts any of them and says so."""
    pki = cli_pki
    sign = ["sign", str(model), "--key", str(pki.leaf_key), "--certificate", str(pki.leaf)]
    assert run([*sign, "--chain", str(pki.chain)]) == 0
    capsys.readouterr()
    verify = ["verify", str(model), "--trust-root", str(pki.root)]
    assert run(verify) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "no identity policy" in line and "--unsafe-no-identity" in line
    assert run([*verify, "--unsafe-no-identity"]) == 0
    assert f"signature OK (signer: certificate {pki.email}" in capsys.readouterr().out
    # A chain that does not validate still fails: the opt-out drops only the identity check.
    assert run([*verify[:2], "--trust-root", str(pki.other_root), "--unsafe-no-identity"]) == 1
    capsys.readouterr()
    # The opt-out and a policy exclude each other; the key method has nothing to opt out of.
    assert run([*verify, "--unsafe-no-identity", "--identity", pki.email]) == 2
    assert "cannot go with --identity" in _one_line_error(capsys.readouterr().err)
    assert run(["verify", str(model), "--key", str(pki.leaf_key), "--unsafe-no-identity"]) == 2
    assert "applies to --trust-root and --sigstore" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sign", "{model}"], "exactly one signing method (given: none)"),
        (["sign", "{model}", "--key", "{priv}", "--sigstore"], "given: --key, --sigstore"),
        (["verify", "{model}"], "exactly one signing method"),
        (["verify", "{model}", "--key", "{pub}", "--trust-root", "{pub}"], "exactly one"),
        (["sign", "{model}", "--key", "{priv}", "--chain", "{pub}"], "--chain needs --certificate"),
        (["verify", "{model}", "--key", "{pub}", "--identity", "a"], "--identity applies"),
        (["verify", "{model}", "--key", "{pub}", "--issuer", "a"], "--issuer applies"),
        (["sign", "{model}", "--key", "{priv}", "--hash", "md5"], "--hash: 'md5'"),
        (["sign", "{model}", "--key", "{priv}", "--serialization", "x"], "--serialization"),
        (["verify", "{model}", "--sigstore"], "needs the expected --identity and --issuer"),
        (["sign", "{model}", "--key", "{priv}"], "encrypted; give its --password"),
        (["sign", "{model}", "--key", "{priv}", "--password", "bad"], "wrong password"),
        (["sign", "{model}", "--key", "{pub}"], "is a public key"),
        (["verify", "{model}", "--key", "{pub}"], "no such signature file"),
        (["verify", "{model}/nope", "--key", "{pub}"], "no such file or directory"),
        (["verify", "{model}", "--key", "{model}/none.pem"], "no such public key file"),
        (["sign", "{model}", "--key", "{priv}", "--shard-size", "0"], "shard-size"),
        (["sign", "{model}", "--pkcs11-uri", "pkcs11:token=none;object=x"], ""),
    ],
)
def test_usage_and_input_errors_exit_2(
    model: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    filled = [a.format(model=model, priv=keys[0], pub=keys[1]) for a in argv]
    assert run(filled) == 2
    assert message in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"mediaType": "x"}', "mediaType: unsupported"),
        (b"", "malformed JSON"),
    ],
)
def test_malformed_signature_exits_2(
    model: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    (model / "model.sig").write_bytes(content)
    assert run(["verify", str(model), "--key", str(keys[1])]) == 2
    assert message in _one_line_error(capsys.readouterr().err)


def test_console_script_exit_codes(model: Path, keys: tuple[Path, Path]) -> None:
    env = {**os.environ, "WEIGHTVAULT_KEY_PASSWORD": "pw"}
    exe = [sys.executable, "-m", "weightvault"]
    signed = subprocess.run([*exe, "sign", str(model), "--key", str(keys[0])], env=env, check=False)
    assert signed.returncode == 0
    (model / "model.safetensors").write_bytes(b"swapped")
    proc = subprocess.run(
        [*exe, "verify", str(model), "--key", str(keys[1])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.strip() == "changed: model.safetensors"
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.skipif(not HISTORY.is_dir(), reason=f"shared fixtures absent ({HISTORY})")
def test_peer_fixtures_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    key_case = HISTORY / "v1.1.0-elliptic-key"
    cert_case = HISTORY / "v1.1.0-certificate"
    keys = HISTORY / "keys"
    assert run(["verify", str(key_case), "--key", str(keys / "signing-key-pub.pem")]) == 0
    assert (
        run(
            [
                "verify",
                str(cert_case),
                "--trust-root",
                str(keys / "ca-cert.pem"),
                "--identity",
                "intermediate-ca",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("signature OK") == 2
    # The key of the key fixture is not the certificate fixture's signer.
    assert run(["verify", str(cert_case), "--key", str(keys / "signing-key-pub.pem")]) == 1
    assert "made with a certificate" in _one_line_error(capsys.readouterr().err)


def test_wrong_predicate_type_and_other_key_via_cli(
    model: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
    from weightvault.signing import digest
    from weightvault.signing.key import KeySigner

    signer = KeySigner.from_file(keys[0], "pw")
    statement = json.loads(digest(model).to_payload())
    statement["predicateType"] = "https://example.com/not-a-model/v1"
    bundle = signer.sign(INTOTO_PAYLOAD_TYPE, json.dumps(statement).encode())
    (model / "model.sig").write_bytes(bundle)
    assert run(["verify", str(model), "--key", str(keys[1])]) == 2
    assert "payload.predicateType" in _one_line_error(capsys.readouterr().err)

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pub = tmp_path / "other.pub"
    other_pub.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert run(["sign", str(model), "--key", str(keys[0]), "--password", "pw", "--force"]) == 0
    capsys.readouterr()
    assert run(["verify", str(model), "--key", str(other_pub)]) == 1
    assert "signed by a different key" in _one_line_error(capsys.readouterr().err)


def test_pkcs11_method_through_the_cli(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI dispatches --pkcs11-uri to the PKCS#11 method (a real SoftHSM2 token)."""
    softhsm = pytest.importorskip("tests.softhsm", reason="run from the checkout root")
    if not softhsm.softhsm_available():
        pytest.skip("SoftHSM2 is not installed (scripts/setup.sh installs it)")
    from weightvault.keys import pkcs11 as p11

    monkeypatch.delenv(p11.PIN_ENV, raising=False)
    monkeypatch.delenv(p11.MODULE_ENV, raising=False)
    token = softhsm.make_token(tmp_path / "hsm", monkeypatch=monkeypatch)
    uri = token.generate_ec_key("release")
    assert run(["sign", str(model), "--pkcs11-uri", uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signer"]["method"] == "pkcs11"
    public = tmp_path / "release.pub"
    public.write_bytes(token.public_key_pem("release"))
    assert run(["verify", str(model), "--key", str(public)]) == 0
    assert run(["verify", str(model), "--pkcs11-uri", uri]) == 0
    (model / "config.json").write_text("{}")
    assert run(["verify", str(model), "--pkcs11-uri", uri]) == 1
    assert "changed: config.json" in _one_line_error(capsys.readouterr().err)
