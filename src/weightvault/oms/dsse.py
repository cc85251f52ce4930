"""DSSE (Dead Simple Signing Envelope) v1: the pre-authentication encoding and the envelope.

A DSSE signature never covers the payload alone but ``PAE(type, body)``, so a signature over one
payload type cannot be replayed as another (DSSE protocol, "Signature definition"):

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with ``LEN`` the byte length in ASCII decimal and ``SP`` one space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weightvault import _b64
from weightvault.errors import FormatError
from weightvault.oms._json import field_list, field_str, object_items, reject_unknown

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeSignature",
    "pae",
    "pae_legacy_v02",
]

#: The only payload type OMS signatures carry: a JSON in-toto statement.
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload`` under ``payload_type``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def pae_legacy_v02(payload_type: str, payload: bytes) -> bytes:
    """The encoding ``model-signing`` 0.2 signed by mistake (accepted on verify only).

    That release formatted the body with Python's ``repr`` of bytes and spelled the tag
    ``DSSEV1``; signatures it made only check against these exact bytes. ``repr`` is injective,
    and the lengths are still there, so the encoding stays unambiguous.
    """
    type_bytes = payload_type.encode("utf-8")
    return f"DSSEV1 {len(type_bytes)} {payload_type} {len(payload)} {payload!r}".encode()


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature of an envelope."""

    sig: bytes
    keyid: str | None = ""
    """``""`` as model-signing 1.x writes it; ``None`` where older bundles wrote ``null``."""

    def to_json_obj(self) -> dict[str, Any]:
        return {"sig": _b64.encode(self.sig), "keyid": self.keyid or ""}


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the payload bytes exactly as signed, their type, and signatures."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    @classmethod
    def from_json_obj(cls, obj: dict[str, Any], path: str = "dsseEnvelope") -> Envelope:
        reject_unknown(obj, {"payload", "payloadType", "signatures"}, path)
        payload = _b64.decode_proto(field_str(obj, "payload", path), f"{path}.payload")
        payload_type = field_str(obj, "payloadType", path)
        raw_signatures = field_list(obj, "signatures", path)
        if not raw_signatures:
            raise FormatError(f"{path}.signatures: empty; the envelope carries no signature")
        signatures = []
        for where, item in object_items(raw_signatures, f"{path}.signatures", {"sig", "keyid"}):
            sig = _b64.decode_proto(field_str(item, "sig", where), f"{where}.sig")
            if not sig:
                raise FormatError(f"{where}.sig: empty signature")
            keyid = item.get("keyid")
            if keyid is not None and not isinstance(keyid, str):
                raise FormatError(f"{where}.keyid: expected a string or null")
            signatures.append(EnvelopeSignature(sig, keyid))
        return cls(payload_type, payload, tuple(signatures))

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "payload": _b64.encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [s.to_json_obj() for s in self.signatures],
        }
