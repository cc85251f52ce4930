"""Recipients and identities: keyring files, X25519 keys, passphrases, and their files' safety."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from weightvault.crypt import decrypt_path, encrypt_path, parse_identity, parse_recipient
from weightvault.crypt.recipients import (
    KeyringKey,
    PassphraseIdentity,
    PassphraseRecipient,
    X25519Identity,
    X25519Recipient,
)
from weightvault.crypt.recipients.keyring import create_keyring, load_keyring, weightvault_home
from weightvault.crypt.recipients.x25519 import generate_identity_file, load_identity_file
from weightvault.crypt.stanzas import KeyringStanza, X25519Stanza
from weightvault.errors import InputError, KeyMaterialError, UsageError

DEK = bytes(range(32))


def test_default_keyring_is_created_on_first_use_with_0600(weightvault_home: Path) -> None:
    assert not weightvault_home.exists()
    [key] = parse_recipient("keyring")
    path = weightvault_home / "keyring.kek"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(weightvault_home).st_mode) == 0o700
    [again] = parse_recipient("keyring")
    assert isinstance(key, KeyringKey) and isinstance(again, KeyringKey)
    assert again.kid == key.kid  # loaded, not re-created
    identity = parse_identity("keyring")
    assert identity.unwrap(key.wrap(DEK)) == DEK


def test_home_defaults_to_config_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WEIGHTVAULT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weightvault_home() == tmp_path / ".config" / "weightvault"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620])
def test_group_or_world_accessible_keyring_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.kek"
    create_keyring(path)
    os.chmod(path, mode)
    with pytest.raises(KeyMaterialError, match="group or others") as caught:
        load_keyring(path)
    assert f"chmod 600 {path}" in caught.value.one_line()
    with pytest.raises(KeyMaterialError, match="group or others"):
        parse_identity(f"keyring:{path}")


def test_missing_default_keyring_for_decryption_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="no keyring here"):
        parse_identity("keyring")


def test_keyring_unwrap_refuses_other_kids_and_tampering() -> None:
    key = KeyringKey(os.urandom(32))
    stanza = key.wrap(DEK)
    assert isinstance(stanza, KeyringStanza)
    assert KeyringKey(os.urandom(32)).unwrap(stanza) is None
    tampered = KeyringStanza(
        stanza.kid, nonce=stanza.nonce, wrapped=bytes([stanza.wrapped[0] ^ 1]) + stanza.wrapped[1:]
    )
    assert key.unwrap(tampered) is None
    other_kid = KeyringStanza("0" * 16, nonce=stanza.nonce, wrapped=stanza.wrapped)
    assert key.unwrap(other_kid) is None


def test_corrupt_keyring_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.kek"
    path.write_text("wvkek1:not-base64!!\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyMaterialError):
        load_keyring(path)


def test_x25519_identity_file_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    identity = generate_identity_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    recipient_line = identity.recipient().to_string()
    assert recipient_line.startswith("wvx25519:")
    assert recipient_line in path.read_text()  # the public key is written as a comment
    loaded = load_identity_file(path)
    [recipient] = parse_recipient(recipient_line)
    assert loaded.unwrap(recipient.wrap(DEK)) == DEK
    os.chmod(path, 0o644)
    with pytest.raises(KeyMaterialError, match="group or others"):
        load_identity_file(path)
    with pytest.raises(InputError):
        generate_identity_file(path)  # exists: not overwritten without force


def test_x25519_wrap_is_fresh_and_only_the_right_key_opens_it() -> None:
    alice, bob = X25519Identity.generate(), X25519Identity.generate()
    first = alice.recipient().wrap(DEK)
    second = alice.recipient().wrap(DEK)
    assert isinstance(first, X25519Stanza) and isinstance(second, X25519Stanza)
    assert first.ephemeral != second.ephemeral and first.wrapped != second.wrapped
    assert alice.unwrap(first) == DEK
    assert bob.unwrap(first) is None
    broken = X25519Stanza(first.ephemeral, nonce=first.nonce, wrapped=first.wrapped[:-1] + b"\x00")
    assert alice.unwrap(broken) is None


def test_x25519_low_order_ephemeral_is_refused() -> None:
    alice = X25519Identity.generate()
    stanza = alice.recipient().wrap(DEK)
    assert isinstance(stanza, X25519Stanza)
    zero_point = X25519Stanza(bytes(32), nonce=stanza.nonce, wrapped=stanza.wrapped)
    assert alice.unwrap(zero_point) is None


@pytest.mark.parametrize(
    "text",
    ["wvx25519:", "wvx25519:abc", "wvx25519:" + "A" * 44, "wvx25519:" + "A" * 42 + "!"],
)
def test_malformed_recipient_strings_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        X25519Recipient.from_string(text)


def test_unknown_recipient_and_identity_forms(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a recipient"):
        parse_recipient("alice@example.com")
    with pytest.raises(UsageError, match="not an identity"):
        parse_identity("nothing-here")
    pub = X25519Identity.generate().recipient().to_string()
    with pytest.raises(UsageError, match="cannot decrypt"):
        parse_identity(pub)


def test_recipients_file_lists_several_keys(tmp_path: Path) -> None:
    people = [X25519Identity.generate() for _ in range(3)]
    listing = tmp_path / "team.txt"
    listing.write_text("# team\n" + "\n".join(p.recipient().to_string() for p in people) + "\n")
    recipients = parse_recipient(str(listing))
    assert [r.describe() for r in recipients] == [p.recipient().to_string() for p in people]


def test_passphrase_round_trip_and_wrong_passphrase() -> None:
    recipient = PassphraseRecipient(b"correct horse", log_n=10)
    stanza = recipient.wrap(DEK)
    assert PassphraseIdentity(b"correct horse").unwrap(stanza) == DEK
    assert PassphraseIdentity(b"wrong horse").unwrap(stanza) is None


def test_passphrase_derives_once_per_run(tmp_path: Path, model: Path) -> None:
    """One scrypt per encryption run: every file's stanza shares the salt, with fresh nonces."""
    from weightvault.crypt import inspect_path

    recipient = PassphraseRecipient(b"pw", log_n=10)
    encrypt_path(model, tmp_path / "enc", recipients=[recipient])
    infos = inspect_path(tmp_path / "enc")
    salts = {info.header.recipients[0].salt for info in infos}  # type: ignore[union-attr]
    nonces = {info.header.recipients[0].nonce for info in infos}  # type: ignore[union-attr]
    assert len(salts) == 1 and len(nonces) == len(infos)
    decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[PassphraseIdentity(b"pw")])


def test_passphrase_identity_caps_scrypt_derivations() -> None:
    identity = PassphraseIdentity(b"pw", max_derivations=2)
    stanzas = [PassphraseRecipient(b"pw", log_n=10).wrap(DEK) for _ in range(3)]  # 3 salts
    assert [identity.unwrap(s) for s in stanzas] == [DEK, DEK, None]
    assert identity.unwrap(stanzas[0]) == DEK  # cached salts still open


def test_passphrase_work_factor_limits() -> None:
    with pytest.raises(ValueError):
        PassphraseRecipient(b"pw", log_n=9)
    with pytest.raises(ValueError):
        PassphraseRecipient(b"pw", log_n=21)
    with pytest.raises(ValueError):
        PassphraseRecipient(b"", log_n=12)
