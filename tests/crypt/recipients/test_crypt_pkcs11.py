"""PKCS#11 recipients on a real SoftHSM2 token: the DEK is wrapped by a non-extractable AES KEK."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import tree_bytes
from tests.softhsm import SoftHsmToken

from weightvault.cli.app import run
from weightvault.crypt import decrypt_path, encrypt_path, inspect_path, parse_identity
from weightvault.crypt.recipients.pkcs11 import Pkcs11Key
from weightvault.crypt.stanzas import Pkcs11Stanza
from weightvault.errors import DecryptionError, KeyMaterialError
from weightvault.keys import pkcs11 as p11

DEK = bytes(range(32))


def test_wrap_unwrap_on_the_token_and_no_pin_in_the_stanza(token: SoftHsmToken) -> None:
    uri = token.generate_aes_kek("kek")
    assert "pin-value" in uri
    key = Pkcs11Key.from_uri(uri)
    stanza = key.wrap(DEK)
    assert isinstance(stanza, Pkcs11Stanza)
    assert len(stanza.wrapped) == 40
    assert "pin" not in stanza.key and token.pin not in stanza.to_json()["key"]
    assert key.unwrap(stanza) == DEK
    other = Pkcs11Key.from_uri(token.generate_aes_kek("other-kek"))
    assert other.unwrap(stanza) is None
    tampered = Pkcs11Stanza(stanza.key, stanza.wrapped[:-1] + bytes([stanza.wrapped[-1] ^ 1]))
    assert key.unwrap(tampered) is None


def test_model_encrypted_to_the_hsm_decrypts_only_with_it(
    token: SoftHsmToken, model: Path, tmp_path: Path
) -> None:
    uri = token.generate_aes_kek("kek")
    encrypt_path(model, tmp_path / "enc", recipients=[Pkcs11Key.from_uri(uri)], workers=2)
    assert {i.header.recipients[0].TYPE for i in inspect_path(tmp_path / "enc")} == {"pkcs11"}
    decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[parse_identity(uri)])
    assert tree_bytes(tmp_path / "plain") == tree_bytes(model)
    other = token.generate_aes_kek("other")
    with pytest.raises(DecryptionError, match="cannot decrypt"):
        decrypt_path(tmp_path / "enc", tmp_path / "plain2", identities=[parse_identity(other)])
    assert not (tmp_path / "plain2").exists()


def test_cli_with_pin_from_the_environment(
    token: SoftHsmToken,
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token.generate_aes_kek("kek")
    uri = token.uri_for("kek", type="secret-key", with_pin=False)
    monkeypatch.setenv(p11.PIN_ENV, token.pin)
    assert run(["encrypt", str(model), "-o", str(tmp_path / "enc"), "--to", uri]) == 0
    assert run(["inspect", str(tmp_path / "enc")]) == 0
    shown = capsys.readouterr().out
    assert "pkcs11 pkcs11:token=weightvault-test;object=kek;type=secret-key" in shown
    assert token.pin not in shown
    assert run(["decrypt", str(tmp_path / "enc"), "-o", str(tmp_path / "p"), "-i", uri]) == 0
    assert tree_bytes(tmp_path / "p") == tree_bytes(model)
    monkeypatch.setenv(p11.PIN_ENV, "9999")
    assert run(["decrypt", str(tmp_path / "enc"), "-o", str(tmp_path / "q"), "-i", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "9999" not in err
    assert not (tmp_path / "q").exists()


def test_a_key_that_is_not_aes_is_refused(token: SoftHsmToken) -> None:
    uri = token.generate_ec_key("signer")
    with pytest.raises(KeyMaterialError):
        Pkcs11Key.from_uri(uri).wrap(DEK)
