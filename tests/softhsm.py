"""Real SoftHSM2 tokens for tests: a reusable helper (import it explicitly; it is not a conftest).

Every test gets its own token store under ``tmp_path``, so tests run in parallel (``pytest -n``)
without sharing state. Usage::

    from tests.softhsm import make_token

    def test_wraps_a_dek(tmp_path):
        token = make_token(tmp_path)                      # label "weightvault-test", PIN "1234"
        kek_uri = token.generate_aes_kek("kek")           # non-extractable AES-256, CKA_WRAP/UNWRAP
        ec_uri = token.generate_ec_key("signer", curve="P-384")
        ed_uri = token.generate_ed25519_key("checkpoints")
        # URIs embed the PIN (pin-value) unless with_pin=False, e.g.
        #   pkcs11:token=weightvault-test;object=kek;type=secret-key?pin-value=1234
        token.uri_for("kek", type="secret-key", with_pin=False)
        token.public_key_pem("signer")                    # the public half, PEM

What :func:`make_token` does: writes ``tmp_path/softhsm2/softhsm2.conf`` pointing at a token
folder beside it, sets ``SOFTHSM2_CONF`` in ``os.environ`` (so this process and every subprocess,
including ``weightvault`` and ``model_signing`` CLIs, see the token; pass ``monkeypatch`` to have
it restored after the test), and runs
``softhsm2-util --init-token --free --label LABEL --so-pin ... --pin ...``.
Calling it again with the same ``tmp_path`` and another label adds a second token to the same store
(e.g. for "a signature from another token's key is rejected"). :func:`make_isolated_token` also
clears ``WEIGHTVAULT_PKCS11_PIN`` and ``WEIGHTVAULT_PKCS11_MODULE`` for the test; the ``token``
fixture (``tests/conftest.py``) is that call with the defaults.

``token.module`` is SoftHSM2's module path; ``token.pin`` and ``token.so_pin`` are the PINs.
Keys are generated through :class:`weightvault.keys.pkcs11.Pkcs11Session`, so the module is loaded
once per process (loading it twice in one process and unloading one copy would finalize the other).
SoftHSM2 2.6 supports everything used here, Ed25519 included; ``CKM_ECDSA_SHA256`` it does not
(weightvault hashes outside the token).

SoftHSM2 reads its configuration and token folder when the module is initialised; weightvault
re-initialises it whenever no session is open, so create tokens before opening a long-lived
:class:`~weightvault.keys.pkcs11.Pkcs11Session` (one-shot calls such as ``sign_ecdsa`` always see
tokens made earlier).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from weightvault.keys.pkcs11 import (
    DEFAULT_MODULE,
    MODULE_ENV,
    PIN_ENV,
    Pkcs11Session,
    Pkcs11Uri,
    load_public_key,
)

__all__ = [
    "SOFTHSM_MODULE",
    "SoftHsmToken",
    "make_isolated_token",
    "make_token",
    "softhsm_available",
]

SOFTHSM_MODULE = DEFAULT_MODULE


def softhsm_available() -> bool:
    """True when SoftHSM2's module and ``softhsm2-util`` are installed."""
    return Path(SOFTHSM_MODULE).is_file() and shutil.which("softhsm2-util") is not None


@dataclass(frozen=True)
class SoftHsmToken:
    """A freshly initialised SoftHSM2 token and the facts needed to use it."""

    label: str
    pin: str
    so_pin: str
    module: str
    conf_path: Path
    token_dir: Path

    def uri_for(
        self,
        object_label: str | None = None,
        *,
        type: str | None = None,
        key_id: bytes | None = None,
        with_pin: bool = True,
        with_module: bool = False,
    ) -> str:
        """A PKCS#11 URI naming this token (and an object on it), with the PIN by default."""
        uri = Pkcs11Uri(
            token=self.label,
            object=object_label,
            type=type,
            id=key_id,
            pin_value=self.pin if with_pin else None,
            module_path=self.module if with_module else None,
        )
        return uri.format(include_pin=True)

    def session(self) -> Pkcs11Session:
        """A logged-in read/write session (use as a context manager)."""
        return Pkcs11Session(self.uri_for(), rw=True)

    def generate_ec_key(
        self, label: str, *, curve: str = "P-256", key_id: bytes | None = None
    ) -> str:
        """Generate an EC key pair; return the URI of its private key (PIN included)."""
        with self.session() as session:
            session.generate_ec_key_pair(label, curve=curve, key_id=key_id)
        return self.uri_for(label, type="private", key_id=key_id)

    def generate_ed25519_key(self, label: str, *, key_id: bytes | None = None) -> str:
        """Generate an Ed25519 key pair; return the URI of its private key (PIN included)."""
        with self.session() as session:
            session.generate_ed25519_key_pair(label, key_id=key_id)
        return self.uri_for(label, type="private", key_id=key_id)

    def generate_aes_kek(self, label: str, *, bits: int = 256, key_id: bytes | None = None) -> str:
        """Generate a non-extractable AES key-encryption key; return its URI (PIN included)."""
        with self.session() as session:
            session.generate_aes_kek(label, bits=bits, key_id=key_id)
        return self.uri_for(label, type="secret-key", key_id=key_id)

    def public_key(self, label: str) -> Any:
        """The public half of a key pair, as a ``cryptography`` public key object."""
        return load_public_key(self.uri_for(label))

    def public_key_pem(self, label: str) -> bytes:
        """The public half of a key pair as PEM (SubjectPublicKeyInfo)."""
        key = self.public_key(label)
        return bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should see this token."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf_path)}


def make_token(
    tmp_path: Path,
    label: str = "weightvault-test",
    *,
    pin: str = "1234",
    so_pin: str = "12345678",
    monkeypatch: Any = None,
) -> SoftHsmToken:
    """Initialise a SoftHSM2 token in ``tmp_path/softhsm2`` and point ``SOFTHSM2_CONF`` at it."""
    if not softhsm_available():
        raise RuntimeError(
            "SoftHSM2 is not installed (apt-get install softhsm2): the PKCS#11 tests need it"
        )
    store = tmp_path / "softhsm2"
    token_dir = store / "tokens"
    conf_path = store / "softhsm2.conf"
    token_dir.mkdir(parents=True, exist_ok=True)
    if not conf_path.exists():
        conf_path.write_text(
            f"directories.tokendir = {token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
    if monkeypatch is not None:
        monkeypatch.setenv("SOFTHSM2_CONF", str(conf_path))
    else:
        os.environ["SOFTHSM2_CONF"] = str(conf_path)
    result = subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            pin,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf_path)},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {result.stderr.strip()}")
    return SoftHsmToken(
        label=label,
        pin=pin,
        so_pin=so_pin,
        module=SOFTHSM_MODULE,
        conf_path=conf_path,
        token_dir=token_dir,
    )


def make_isolated_token(
    tmp_path: Path,
    monkeypatch: Any,
    label: str = "weightvault-test",
    *,
    pin: str = "1234",
) -> SoftHsmToken:
    """:func:`make_token` with the PIN and module overrides of the environment cleared for the
    test, so only the URI (or what the test sets) decides which PIN and module are used."""
    monkeypatch.delenv(PIN_ENV, raising=False)
    monkeypatch.delenv(MODULE_ENV, raising=False)
    return make_token(tmp_path, label, pin=pin, monkeypatch=monkeypatch)
