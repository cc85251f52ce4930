"""PKCS#11 tokens: RFC 7512 URIs, sessions, and the operations other capabilities need.

Keys never leave the token. This module signs (ECDSA P-256/P-384/P-521 over a hash computed here,
Ed25519 with ``CKM_EDDSA``), wraps and unwraps secrets under a non-extractable AES key-encryption
key (``CKM_AES_KEY_WRAP`` = RFC 3394, ``CKM_AES_KEY_WRAP_PAD`` = RFC 5649), reads public keys, and
generates keys on the token (EC, Ed25519, AES key-encryption keys; private parts never extractable).

A key is named by a PKCS#11 URI (RFC 7512), for example::

    pkcs11:token=models;object=release-signing;type=private?pin-source=file:/run/secrets/pin

* The PIN comes from, in order: the ``pin`` argument, ``pin-value``, ``pin-source`` (a file path
  or ``file:`` URI; running programs with ``|cmd`` is refused), the ``WEIGHTVAULT_PKCS11_PIN``
  environment variable. PINs never appear in messages, logs or ``repr``.
* The module comes from ``module-path`` (a file, or a folder plus ``module-name``), then the
  ``WEIGHTVAULT_PKCS11_MODULE`` environment variable, then SoftHSM2's
  ``/usr/lib/softhsm/libsofthsm2.so``.

Every failure is a :class:`~weightvault.errors.KeyMaterialError` with one line saying what is
wrong (module missing, token not found, wrong PIN, key not found, key of the wrong type), except
a failed unwrap, which is a :class:`~weightvault.errors.DecryptionError` whatever the cause
(wrong key-encryption key and tampered blob look the same).

One operation opens one session (about 1 ms on SoftHSM2); hold a :class:`Pkcs11Session` open to
batch many. Sessions are not shared between threads.

The package is split along the seams of that work: ``_uri`` (RFC 7512 URIs and PIN sources),
``_token`` (loading modules, finding tokens), ``_kinds`` (which key is which), ``_core``
(session lifecycle, login, object lookup), ``_signing``, ``_wrapping`` and ``_generation``
(the operations), composed into :class:`Pkcs11Session` in ``_session``.
"""

from __future__ import annotations

from weightvault.keys.pkcs11._kinds import KeyKind, KeyProtection
from weightvault.keys.pkcs11._session import (
    Pkcs11Session,
    load_public_key,
    sign_ecdsa,
    sign_ed25519,
    unwrap_key,
    wrap_key,
)
from weightvault.keys.pkcs11._token import iter_module_tokens
from weightvault.keys.pkcs11._uri import (
    DEFAULT_MODULE,
    MODULE_ENV,
    PIN_ENV,
    Pkcs11Uri,
    redacted_uri,
)

__all__ = [
    "DEFAULT_MODULE",
    "MODULE_ENV",
    "PIN_ENV",
    "KeyKind",
    "KeyProtection",
    "Pkcs11Session",
    "Pkcs11Uri",
    "iter_module_tokens",
    "load_public_key",
    "redacted_uri",
    "sign_ecdsa",
    "sign_ed25519",
    "unwrap_key",
    "wrap_key",
]
