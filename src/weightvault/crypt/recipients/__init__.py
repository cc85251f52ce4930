"""Recipients (who a file is encrypted to) and identities (what opens it).

Four kinds, each wrapping the same per-file data key (DEK):

=============  ==================================  =========================================
kind           ``--to`` (recipient)                 ``--identity`` (opens it)
=============  ==================================  =========================================
keyring        ``keyring`` or ``keyring:PATH``      ``keyring``, ``keyring:PATH`` or the file
X25519         ``wvx25519:...`` or a file of them   the identity file (``wvx25519-secret:...``)
passphrase     ``passphrase``                       ``passphrase``
PKCS#11        ``pkcs11:token=..;object=..``        the same URI (PIN from ``pin-source``/env)
=============  ==================================  =========================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.crypt.recipients.keyring import (
    KeyringKey,
    default_keyring_path,
    load_keyring,
    load_or_create_keyring,
    parse_keyring_text,
)
from weightvault.crypt.recipients.passphrase import (
    DEFAULT_LOG_N,
    PassphraseIdentity,
    PassphraseRecipient,
)
from weightvault.crypt.recipients.x25519 import (
    RECIPIENT_PREFIX,
    X25519Identity,
    X25519Recipient,
    parse_identity_text,
)
from weightvault.errors import InputError, KeyMaterialError, UsageError
from weightvault.keys.files import key_lines, read_secret_file

__all__ = [
    "Identity",
    "KeyringKey",
    "PassphraseIdentity",
    "PassphraseRecipient",
    "Recipient",
    "X25519Identity",
    "X25519Recipient",
    "parse_identity",
    "parse_recipient",
]

PassphraseSource = Callable[[], bytes]

_RECIPIENT_FORMS = (
    "keyring, keyring:PATH, wvx25519:KEY, a file of wvx25519: lines, passphrase, pkcs11:URI"
)
_IDENTITY_FORMS = "keyring, keyring:PATH, an identity or keyring file, passphrase, pkcs11:URI"


def _no_passphrase() -> bytes:
    raise UsageError("a passphrase is needed but none can be read here")


def parse_recipient(
    spec: str,
    *,
    passphrase: PassphraseSource = _no_passphrase,
    scrypt_log_n: int = DEFAULT_LOG_N,
    rng: Random = os.urandom,
) -> list[Recipient]:
    """Turn one ``--to`` value into recipients (a file may list several)."""
    if spec == "keyring":
        return [load_or_create_keyring(default_keyring_path(), rng=rng)]
    if spec.startswith("keyring:"):
        return [load_or_create_keyring(Path(spec[len("keyring:") :]), rng=rng)]
    if spec.startswith(RECIPIENT_PREFIX):
        return [X25519Recipient.from_string(spec, rng=rng)]
    if spec == "passphrase":
        return [PassphraseRecipient(passphrase(), log_n=scrypt_log_n, rng=rng)]
    if spec.startswith("pkcs11:"):
        from weightvault.crypt.recipients.pkcs11 import Pkcs11Key

        return [Pkcs11Key.from_uri(spec)]
    path = Path(spec)
    if path.is_file():
        return _recipients_from_file(path, rng=rng)
    raise UsageError(f"{spec!r}: not a recipient; use one of: {_RECIPIENT_FORMS}")


def _recipients_from_file(path: Path, *, rng: Random) -> list[Recipient]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read recipients file") from exc
    lines = key_lines(text)
    if lines and all(line.startswith(RECIPIENT_PREFIX) for line in lines):
        return [X25519Recipient.from_string(line, rng=rng) for line in lines]
    # An identity file also names its recipient (its public key); keyring files too.
    identity = _identity_from_file(path)
    if isinstance(identity, X25519Identity):
        return [X25519Recipient(identity.public_key, rng=rng)]
    if isinstance(identity, KeyringKey):
        return [identity]
    raise UsageError(f"{path}: no recipients in this file")


def _identity_from_file(path: Path) -> Identity:
    text = read_secret_file(path, "key file")
    identity = parse_identity_text(text, str(path))
    if identity is not None:
        return identity
    keyring = parse_keyring_text(text, str(path))
    if keyring is not None:
        return keyring
    raise KeyMaterialError(f"{path}: not a weightvault identity or keyring file")


def parse_identity(spec: str, *, passphrase: PassphraseSource = _no_passphrase) -> Identity:
    """Turn one ``--identity`` value into an identity."""
    if spec == "keyring" or spec.startswith("keyring:"):
        path = default_keyring_path() if spec == "keyring" else Path(spec[len("keyring:") :])
        if not path.exists():
            raise InputError(
                f"{path}: no keyring here",
                hint="decrypt on the machine that encrypted, or give another identity",
                remedy="identity",
            )
        return load_keyring(path)
    if spec == "passphrase":
        return PassphraseIdentity(passphrase())
    if spec.startswith("pkcs11:"):
        from weightvault.crypt.recipients.pkcs11 import Pkcs11Key

        pkcs11_identity: Identity = Pkcs11Key.from_uri(spec)
        return pkcs11_identity
    path = Path(spec)
    if path.is_file():
        return _identity_from_file(path)
    if spec.startswith(RECIPIENT_PREFIX):
        raise UsageError(
            f"{spec[:20]}...: a recipient (public key) cannot decrypt; give the identity file"
        )
    raise UsageError(f"{spec!r}: not an identity; use one of: {_IDENTITY_FORMS}")
