"""``sign --scan`` and ``sign --log`` / ``verify --require-log``: signing composed with the
scanner and the transparency log, through the command line."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest
from tests.keyfiles import write_ec_key_pair

from weightvault.cli.app import run


class _Touch:
    """A pickle payload that would create a file when loaded (it never is)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_ec_key_pair(tmp_path)


def _model(root: Path) -> Path:
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden": 16}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return model


def _log(tmp_path: Path, name: str = "example.com/wv-test") -> tuple[Path, Path, Path]:
    key = tmp_path / f"{name.replace('/', '_')}.key"
    db = tmp_path / f"{name.replace('/', '_')}.db"
    assert run(["log", "keygen", "--name", name, "--out", str(key)]) == 0
    assert run(["log", "init", str(db), "--origin", name]) == 0
    return db, key, Path(f"{key}.pub")


def test_scan_refuses_to_sign_a_malicious_model(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path)
    marker = tmp_path / "pwned"
    (model / "extra.bin").write_bytes(pickle.dumps(_Touch(marker)))
    code = run(["sign", str(model), "--key", str(keys[0]), "--scan"])
    err = capsys.readouterr().err
    assert code == 1
    assert "extra.bin" in err and "dangerous" in err
    assert len(err.strip().splitlines()) == 1
    assert not (model / "model.sig").exists()
    assert not marker.exists()


def test_scan_threshold_and_allow(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path)
    # An unknown (not allow-listed, not dangerous) import is "suspicious".
    (model / "extra.pkl").write_bytes(b"\x80\x02cmypkg\nBlock\n)\x81.")
    assert run(["sign", str(model), "--key", str(keys[0]), "--scan"]) == 1
    assert "mypkg.Block" in capsys.readouterr().err
    assert not (model / "model.sig").exists()
    assert run(["sign", str(model), "--key", str(keys[0]), "--scan", "--fail-on", "dangerous"]) == 0
    (model / "model.sig").unlink()
    assert run(["sign", str(model), "--key", str(keys[0]), "--scan", "--allow", "mypkg.Block"]) == 0
    assert run(["verify", str(model), "--key", str(keys[1])]) == 0


def test_scan_ignores_the_old_signature_and_ignored_paths(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    model = _model(tmp_path)
    (model / ".git").mkdir()
    (model / ".git" / "evil.pkl").write_bytes(pickle.dumps(_Touch(tmp_path / "x")))
    assert run(["sign", str(model), "--key", str(keys[0]), "--scan"]) == 0
    assert run(["sign", str(model), "--key", str(keys[0]), "--scan", "--force"]) == 0  # re-sign


def test_allow_without_scan_is_a_usage_error(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path)
    assert run(["sign", str(model), "--key", str(keys[0]), "--allow", "a.b"]) == 2
    assert "--allow" in capsys.readouterr().err


def test_logged_signature_verifies_offline_and_with_the_peer(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    model = _model(tmp_path)
    db, log_key, log_pub = _log(tmp_path)
    assert run(["sign", str(model), "--key", str(keys[0]), "--log", str(db),
                "--log-key", str(log_key)]) == 0
    bundle = json.loads((model / "model.sig").read_text())
    entries = bundle["verificationMaterial"]["tlogEntries"]
    assert len(entries) == 1 and entries[0]["logIndex"] == "0"
    assert run(["verify", str(model), "--key", str(keys[1]), "--require-log",
                "--log-key", str(log_pub)]) == 0

    import model_signing

    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1])
    config.set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[model / "model.sig"])
    )
    config.verify(model, model / "model.sig")  # raises on any mismatch


def test_require_log_rejects_unlogged_foreign_and_edited_entries(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path)
    db, log_key, log_pub = _log(tmp_path)
    _, _, other_pub = _log(tmp_path, "example.com/other-log")

    assert run(["sign", str(model), "--key", str(keys[0])]) == 0
    assert run(["verify", str(model), "--key", str(keys[1]), "--require-log",
                "--log-key", str(log_pub)]) == 1
    assert "0 weightvault log entries" in capsys.readouterr().err

    assert run(["sign", str(model), "--key", str(keys[0]), "--log", str(db),
                "--log-key", str(log_key), "--force"]) == 0
    assert run(["verify", str(model), "--key", str(keys[1]), "--require-log",
                "--log-key", str(other_pub)]) == 1
    capsys.readouterr()

    sig = model / "model.sig"
    original = json.loads(sig.read_text())
    entry = original["verificationMaterial"]["tlogEntries"][0]
    for field, value in (("logIndex", "7"), ("integratedTime", "1")):
        edited = json.loads(json.dumps(original))
        edited["verificationMaterial"]["tlogEntries"][0][field] = value
        sig.write_text(json.dumps(edited))
        assert run(["verify", str(model), "--key", str(keys[1]), "--require-log",
                    "--log-key", str(log_pub)]) == 1, field
    edited = json.loads(json.dumps(original))
    edited["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["rootHash"] = (
        base64.b64encode(bytes(32)).decode()
    )
    sig.write_text(json.dumps(edited))
    assert run(["verify", str(model), "--key", str(keys[1]), "--require-log",
                "--log-key", str(log_pub)]) == 1
    assert "inclusion proof failed" in capsys.readouterr().err
    assert entry["kindVersion"]["kind"]


def test_log_options_must_come_in_pairs(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path)
    assert run(["sign", str(model), "--key", str(keys[0]), "--log", "x.db"]) == 2
    assert run(["verify", str(model), "--key", str(keys[1]), "--require-log"]) == 2
    assert run(["verify", str(model), "--key", str(keys[1]), "--witness-key", "k"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3
