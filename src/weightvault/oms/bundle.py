"""The Sigstore bundle as OMS signatures use it: JSON in, frozen data out, and back.

weightvault writes bundle v0.3 (``application/vnd.dev.sigstore.bundle.v0.3+json``) exactly as
``model-signing`` 1.1 does, and reads the older shapes the peer produced over its history:

* v0.1 / v0.2 media types (``application/vnd.dev.sigstore.bundle+json;version=0.x``);
* key bundles that carry the key itself (``publicKey.rawBytes`` + ``keyDetails``) instead of the
  ``hint``, signatures with ``keyid: null``, and no ``tlogEntries``.

Parsing goes through :func:`parse_bundle` only; it keeps the original bytes and refuses unknown
fields, duplicate keys and bad base64, naming the field. Transparency-log entries and timestamps
are kept as raw JSON for the methods that check them (Sigstore); this module does not judge them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from weightvault import _b64
from weightvault.errors import FormatError
from weightvault.oms._json import (
    field_list,
    field_object,
    field_str,
    load_json,
    reject_unknown,
)
from weightvault.oms.dsse import Envelope, EnvelopeSignature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "KNOWN_BUNDLE_MEDIA_TYPES",
    "Bundle",
    "VerificationMaterial",
    "certificate_bundle_json",
    "key_bundle_json",
    "parse_bundle",
    "public_key_hint",
]

#: The media type weightvault (and model-signing >= 1.0) writes.
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"

KNOWN_BUNDLE_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        BUNDLE_MEDIA_TYPE,
    }
)


@dataclass(frozen=True)
class VerificationMaterial:
    """What a verifier needs beside the envelope: a key hint, a key, or certificates."""

    public_key_hint: str | None = None
    """Hex SHA-256 of the signer's public key PEM (model-signing >= 1.1)."""
    public_key_raw: bytes | None = None
    """The key itself, as older bundles carried it (``rawBytes``; PEM or DER)."""
    key_details: str | None = None
    """Algorithm name recorded beside ``rawBytes`` (for example ``PKIX_ECDSA_P384_SHA_384``)."""
    certificates: tuple[bytes, ...] = ()
    """DER certificates, leaf first (``x509CertificateChain``, or v0.3 ``certificate``)."""
    tlog_entries: tuple[dict[str, Any], ...] = ()
    """Transparency-log entries, raw (checked by the Sigstore method)."""
    timestamp_verification_data: dict[str, Any] | None = None
    """RFC 3161 timestamps, raw."""

    @property
    def kind(self) -> str:
        """``certificate``, ``public_key`` or ``none``."""
        if self.certificates:
            return "certificate"
        if self.public_key_hint is not None or self.public_key_raw is not None:
            return "public_key"
        return "none"


@dataclass(frozen=True)
class Bundle:
    """A parsed Sigstore bundle holding a DSSE envelope."""

    media_type: str
    verification_material: VerificationMaterial
    dsse_envelope: Envelope
    raw_json: bytes = field(repr=False)
    """The exact bytes parsed (kept so callers can hand them to another parser)."""

    @property
    def signatures(self) -> tuple[EnvelopeSignature, ...]:
        return self.dsse_envelope.signatures

    @property
    def payload_type(self) -> str:
        return self.dsse_envelope.payload_type

    @property
    def payload(self) -> bytes:
        return self.dsse_envelope.payload


def _parse_public_key(
    obj: dict[str, Any], path: str
) -> tuple[str | None, bytes | None, str | None]:
    reject_unknown(obj, {"hint", "rawBytes", "keyDetails"}, path)
    hint_value = obj.get("hint")
    hint: str | None = None
    if hint_value is not None:
        if not isinstance(hint_value, str):
            raise FormatError(f"{path}.hint: expected a string")
        hint = hint_value
    raw: bytes | None = None
    if obj.get("rawBytes") is not None:
        raw = _b64.decode_proto(field_str(obj, "rawBytes", path), f"{path}.rawBytes")
    details = obj.get("keyDetails")
    if details is not None and not isinstance(details, str):
        raise FormatError(f"{path}.keyDetails: expected a string")
    if hint is None and raw is None:
        raise FormatError(f"{path}: neither hint nor rawBytes present")
    return hint, raw, details


def _parse_certificate(obj: Any, path: str) -> bytes:
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected an object")
    reject_unknown(obj, {"rawBytes"}, path)
    der = _b64.decode_proto(field_str(obj, "rawBytes", path), f"{path}.rawBytes")
    if not der:
        raise FormatError(f"{path}.rawBytes: empty certificate")
    return der


def _parse_material(obj: dict[str, Any], path: str) -> VerificationMaterial:
    reject_unknown(
        obj,
        {
            "publicKey",
            "x509CertificateChain",
            "certificate",
            "tlogEntries",
            "timestampVerificationData",
        },
        path,
    )
    present = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in obj]
    if len(present) != 1:
        raise FormatError(
            f"{path}: expected exactly one of publicKey, x509CertificateChain, certificate"
            f" (found {', '.join(present) or 'none'})"
        )
    hint = raw = details = None
    certificates: list[bytes] = []
    if "publicKey" in obj:
        hint, raw, details = _parse_public_key(
            field_object(obj, "publicKey", path), f"{path}.publicKey"
        )
    elif "x509CertificateChain" in obj:
        chain_path = f"{path}.x509CertificateChain"
        chain = field_object(obj, "x509CertificateChain", path)
        reject_unknown(chain, {"certificates"}, chain_path)
        items = field_list(chain, "certificates", chain_path)
        if not items:
            raise FormatError(f"{chain_path}.certificates: empty")
        certificates = [
            _parse_certificate(item, f"{chain_path}.certificates[{i}]")
            for i, item in enumerate(items)
        ]
    else:
        certificates = [_parse_certificate(obj["certificate"], f"{path}.certificate")]
    tlog: list[dict[str, Any]] = []
    if obj.get("tlogEntries") is not None:
        entries = field_list(obj, "tlogEntries", path)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise FormatError(f"{path}.tlogEntries[{index}]: expected an object")
            tlog.append(entry)
    timestamps = obj.get("timestampVerificationData")
    if timestamps is not None and not isinstance(timestamps, dict):
        raise FormatError(f"{path}.timestampVerificationData: expected an object")
    return VerificationMaterial(
        public_key_hint=hint,
        public_key_raw=raw,
        key_details=details,
        certificates=tuple(certificates),
        tlog_entries=tuple(tlog),
        timestamp_verification_data=timestamps,
    )


def parse_bundle(bundle_json: bytes) -> Bundle:
    """Parse a bundle file's bytes; raises :class:`FormatError` naming the offending field."""
    doc = load_json(bundle_json, "signature")
    reject_unknown(
        doc, {"mediaType", "verificationMaterial", "dsseEnvelope", "messageSignature"}, ""
    )
    media_type = field_str(doc, "mediaType", "")
    if media_type not in KNOWN_BUNDLE_MEDIA_TYPES:
        raise FormatError(f"mediaType: unsupported bundle media type {media_type!r}")
    if "messageSignature" in doc:
        raise FormatError(
            "messageSignature: a plain message signature, not a model signature (expected a"
            " DSSE envelope)"
        )
    material = _parse_material(
        field_object(doc, "verificationMaterial", ""), "verificationMaterial"
    )
    envelope = Envelope.from_json_obj(field_object(doc, "dsseEnvelope", ""), "dsseEnvelope")
    return Bundle(media_type, material, envelope, bytes(bundle_json))


def public_key_hint(public_key: PublicKeyTypes) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo PEM as ``cryptography`` writes it.

    This is the ``publicKey.hint`` model-signing records: it depends on the key only, not on how
    the key file happened to be formatted.
    """
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _bundle_bytes(material: dict[str, Any], payload_type: str, payload: bytes, sig: bytes) -> bytes:
    envelope = Envelope(payload_type, payload, (EnvelopeSignature(sig, ""),))
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": envelope.to_json_obj(),
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def key_bundle_json(
    payload_type: str, payload: bytes, signature: bytes, public_key: PublicKeyTypes
) -> bytes:
    """A v0.3 bundle for a key signature, as model-signing's key method writes it."""
    material = {"publicKey": {"hint": public_key_hint(public_key)}, "tlogEntries": []}
    return _bundle_bytes(material, payload_type, payload, signature)


def certificate_bundle_json(
    payload_type: str, payload: bytes, signature: bytes, chain_der: list[bytes]
) -> bytes:
    """A v0.3 bundle for a certificate signature: ``chain_der`` is leaf first, DER."""
    if not chain_der:
        raise ValueError("chain_der must hold at least the signing certificate")
    material = {
        "x509CertificateChain": {
            "certificates": [{"rawBytes": _b64.encode(der)} for der in chain_der]
        },
        "tlogEntries": [],
    }
    return _bundle_bytes(material, payload_type, payload, signature)
