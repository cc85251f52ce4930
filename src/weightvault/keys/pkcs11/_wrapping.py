"""Wrapping and unwrapping secrets under a non-extractable AES key-encryption key on the token
(``CKM_AES_KEY_WRAP`` = RFC 3394, ``CKM_AES_KEY_WRAP_PAD`` = RFC 5649)."""

from __future__ import annotations

from typing import Any

from weightvault.errors import DecryptionError, KeyMaterialError
from weightvault.keys.pkcs11._core import _locked, _SessionBase
from weightvault.keys.pkcs11._kinds import KeyKind, _describe_key_type, _key_kind
from weightvault.keys.pkcs11._token import _describe_pkcs11_error


class _WrappingOps(_SessionBase):
    """Key wrapping with the AES key-encryption key the URI names."""

    def _kek(self, purpose: str) -> Any:
        self._require_login(purpose)
        key = self.find_key("SECRET_KEY", purpose=purpose)
        if _key_kind(key) is not KeyKind.AES:
            raise KeyMaterialError(
                f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
                f"{_describe_key_type(key)}; {purpose} needs an AES key",
                hint="point the URI at an AES key-encryption key",
            )
        return key

    @_locked
    def wrap_key(self, secret: bytes, *, pad: bool = True) -> bytes:
        """Wrap ``secret`` under the AES key-encryption key the URI names.

        ``pad=True`` uses ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649: any length from 1 byte);
        ``pad=False`` uses ``CKM_AES_KEY_WRAP`` (RFC 3394: a multiple of 8 bytes, at least 16).
        The secret enters the token as a temporary session object and is destroyed after.
        """
        if not isinstance(secret, bytes | bytearray) or len(secret) == 0:
            raise ValueError("secret must be non-empty bytes")
        if not pad and (len(secret) % 8 or len(secret) < 16):
            raise ValueError("RFC 3394 key wrap needs a multiple of 8 bytes, at least 16")
        kek = self._kek("key wrapping")
        p11 = self._pkcs11
        attribute = p11.Attribute
        temporary = None
        try:
            temporary = self._session.create_object(
                {
                    attribute.CLASS: p11.ObjectClass.SECRET_KEY,
                    attribute.KEY_TYPE: p11.KeyType.GENERIC_SECRET,
                    attribute.VALUE: bytes(secret),
                    attribute.TOKEN: False,
                    attribute.PRIVATE: True,
                    attribute.SENSITIVE: False,
                    attribute.EXTRACTABLE: True,
                }
            )
            mechanism = p11.Mechanism.AES_KEY_WRAP_PAD if pad else p11.Mechanism.AES_KEY_WRAP
            wrapped = bytes(kek.wrap_key(temporary, mechanism=mechanism))
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key wrapping with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None
        finally:
            if temporary is not None:
                try:
                    temporary.destroy()
                except p11.PKCS11Error:
                    pass
        if pad and len(secret) % 8:
            # SoftHSM2 2.6 zero-pads the key value to 8 bytes *before* RFC 5649 wrapping, so the
            # blob records the padded length; catch any token doing that rather than hand back a
            # blob that unwraps to different bytes elsewhere.
            if self._unwrap(kek, wrapped, pad=True) != bytes(secret):
                raise KeyMaterialError(
                    f"PKCS#11 token {self.token_label!r} does not wrap {len(secret)}-byte secrets "
                    "per RFC 5649 (it pads them first)",
                    hint="wrap secrets whose length is a multiple of 8 bytes (e.g. 32-byte keys)",
                )
        return wrapped

    @_locked
    def unwrap_key(self, wrapped: bytes, *, pad: bool = True) -> bytes:
        """Unwrap a blob made by :meth:`wrap_key` (or any RFC 3394/5649 implementation).

        Any failure that depends on the secret (wrong key-encryption key, a changed byte, a
        truncated blob) raises the same :class:`~weightvault.errors.DecryptionError`.
        """
        if not isinstance(wrapped, bytes | bytearray):
            raise TypeError("wrapped must be bytes")
        kek = self._kek("key unwrapping")
        return self._unwrap(kek, bytes(wrapped), pad=pad)

    def _unwrap(self, kek: Any, wrapped: bytes, *, pad: bool) -> bytes:
        p11 = self._pkcs11
        attribute = p11.Attribute
        mechanism = p11.Mechanism.AES_KEY_WRAP_PAD if pad else p11.Mechanism.AES_KEY_WRAP
        if len(wrapped) < 16 or len(wrapped) % 8:
            raise DecryptionError("key unwrap failed: wrong key-encryption key or damaged data")
        unwrapped = None
        try:
            unwrapped = kek.unwrap_key(
                p11.ObjectClass.SECRET_KEY,
                p11.KeyType.GENERIC_SECRET,
                bytes(wrapped),
                mechanism=mechanism,
                store=False,
                template={
                    attribute.SENSITIVE: False,
                    attribute.EXTRACTABLE: True,
                    attribute.PRIVATE: True,
                },
            )
            return bytes(unwrapped[attribute.VALUE])
        except (
            p11.exceptions.WrappedKeyInvalid,
            p11.exceptions.WrappedKeyLenRange,
            p11.exceptions.EncryptedDataInvalid,
            p11.exceptions.EncryptedDataLenRange,
            p11.exceptions.DataInvalid,
            p11.exceptions.DataLenRange,
            p11.exceptions.GeneralError,
            p11.exceptions.FunctionFailed,
        ):
            raise DecryptionError(
                "key unwrap failed: wrong key-encryption key or damaged data"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key unwrapping with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None
        finally:
            if unwrapped is not None:
                try:
                    unwrapped.destroy()
                except p11.PKCS11Error:
                    pass
