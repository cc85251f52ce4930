"""Generating keys on the token: EC and Ed25519 key pairs and AES key-encryption keys, whose
secret parts are sensitive and never extractable."""

from __future__ import annotations

from typing import Any

from weightvault.errors import KeyMaterialError
from weightvault.keys.pkcs11._core import _locked, _SessionBase
from weightvault.keys.pkcs11._token import _describe_pkcs11_error


class _GenerationOps(_SessionBase):
    """Key generation on the token the session is open on (needs the user PIN)."""

    def _generation_template(self, label: str, key_id: bytes | None) -> dict[Any, Any]:
        self._require_login("generating keys")
        attribute = self._pkcs11.Attribute
        template: dict[Any, Any] = {attribute.LABEL: label, attribute.TOKEN: True}
        if key_id is not None:
            template[attribute.ID] = key_id
        return template

    @_locked
    def generate_ec_key_pair(
        self, label: str, *, curve: str = "P-256", key_id: bytes | None = None
    ) -> None:
        """Create an EC key pair (``P-256``, ``P-384`` or ``P-521``) whose private half is
        sensitive and non-extractable; the public half is a public object with the same label/id.
        """
        oids = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
        if curve not in oids:
            raise ValueError(f"curve must be one of {', '.join(oids)}")
        self._generate_pair(
            label,
            key_id,
            self._pkcs11.KeyType.EC,
            oids[curve],
            self._pkcs11.Mechanism.EC_KEY_PAIR_GEN,
        )

    @_locked
    def generate_ed25519_key_pair(self, label: str, *, key_id: bytes | None = None) -> None:
        """Create an Ed25519 key pair (``CKM_EC_EDWARDS_KEY_PAIR_GEN``), private half locked in."""
        self._generate_pair(
            label,
            key_id,
            self._pkcs11.KeyType.EC_EDWARDS,
            "1.3.101.112",
            self._pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )

    def _generate_pair(
        self, label: str, key_id: bytes | None, key_type: Any, curve: str, mechanism: Any
    ) -> None:
        from pkcs11.util.ec import encode_named_curve_parameters

        p11 = self._pkcs11
        attribute = p11.Attribute
        base = self._generation_template(label, key_id)
        try:
            params = self._session.create_domain_parameters(
                key_type, {attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            params.generate_keypair(
                mechanism=mechanism,
                store=True,
                public_template={**base, attribute.VERIFY: True, attribute.PRIVATE: False},
                private_template={
                    **base,
                    attribute.SIGN: True,
                    attribute.PRIVATE: True,
                    attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False,
                },
            )
        except p11.exceptions.MechanismInvalid:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} cannot generate this key type "
                f"({mechanism.name})"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key generation failed: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None

    @_locked
    def generate_aes_kek(self, label: str, *, bits: int = 256, key_id: bytes | None = None) -> None:
        """Create an AES key-encryption key that can wrap/unwrap but never be read out."""
        if bits not in (128, 192, 256):
            raise ValueError("bits must be 128, 192 or 256")
        p11 = self._pkcs11
        attribute = p11.Attribute
        template = self._generation_template(label, key_id)
        template.update(
            {
                attribute.PRIVATE: True,
                attribute.SENSITIVE: True,
                attribute.EXTRACTABLE: False,
                attribute.WRAP: True,
                attribute.UNWRAP: True,
                attribute.ENCRYPT: False,
                attribute.DECRYPT: False,
            }
        )
        try:
            self._session.generate_key(
                p11.KeyType.AES, bits, store=True, label=label, template=template
            )
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key generation failed: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None
