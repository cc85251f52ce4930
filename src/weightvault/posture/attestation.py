"""The attestation file: controls software cannot check, vouched for by a named person, signed.

Background checks, physical security, red-teaming cadence or supply-chain review leave no trace
weightvault could read, so a person keeps a small YAML file that says which of them are in
place, with a line of evidence each, and signs it with a weightvault signing key (the same
``Signer`` as model signatures: a DSSE envelope in a Sigstore bundle, ``FILE.sig`` beside the
file). Posture reports these controls as *attested*, never as verified, and only when the
signature verifies with the key it was told to trust, the file is unchanged since signing and
the attestation has not expired.

Format (``weightvault.dev/posture-attestation@v1``)::

    format: weightvault.dev/posture-attestation@v1
    organization: Example Lab
    attested_by: Dana Reyes, CISO
    attested_at: 2026-11-30
    valid_until: 2027-05-30
    controls:
      background-checks:
        in_place: true
        evidence: vendor screening for every approver and reader, HR policy P-12

Unknown keys, duplicate keys, wrong types and dates out of order are refused.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault.errors import FormatError, InputError, VerificationError

if TYPE_CHECKING:
    from weightvault.signing import Signer, Verifier

__all__ = [
    "ATTESTATION_FORMAT",
    "ATTESTATION_PAYLOAD_TYPE",
    "Attestation",
    "AttestedControl",
    "load_attestation",
    "parse_attestation",
    "sign_attestation",
    "signature_path_for",
]

ATTESTATION_FORMAT = "weightvault.dev/posture-attestation@v1"
ATTESTATION_PAYLOAD_TYPE = "application/vnd.weightvault.posture-attestation+yaml"
MAX_ATTESTATION_BYTES = 1 << 20
_CONTROL_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_TOP_KEYS = {"format", "organization", "attested_by", "attested_at", "valid_until", "controls"}
_CONTROL_KEYS = {"in_place", "evidence"}


@dataclass(frozen=True)
class AttestedControl:
    """One control as the person states it."""

    in_place: bool
    evidence: str


@dataclass(frozen=True)
class Attestation:
    """A parsed (and, from :func:`load_attestation`, verified) attestation."""

    organization: str
    attested_by: str
    attested_at: dt.date
    valid_until: dt.date
    controls: dict[str, AttestedControl]
    signer: str = ""
    """Who signed it, as the verifier established (empty when only parsed)."""

    def expired(self, today: dt.date) -> bool:
        return today > self.valid_until

    def to_json(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "attested_by": self.attested_by,
            "attested_at": self.attested_at.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "signer": self.signer,
            "controls": {
                name: {"in_place": c.in_place, "evidence": c.evidence}
                for name, c in sorted(self.controls.items())
            },
        }


def _loader() -> type[Any]:
    """A safe YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""
    import yaml  # type: ignore[import-untyped]

    class StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _value in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in keys:
                raise FormatError(f"attestation: key {key!r} appears twice")
            keys.add(key)
        return dict(yaml.SafeLoader.construct_mapping(loader, node, deep=deep))

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return StrictLoader


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise FormatError(f"{where}.{key}: expected a non-empty string")
    return value


def _date(doc: dict[str, Any], key: str) -> dt.date:
    value = doc.get(key)
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise FormatError(f"attestation.{key}: expected a date (YYYY-MM-DD)")


def parse_attestation(data: bytes) -> Attestation:
    """Parse attestation YAML strictly (no signature check: see :func:`load_attestation`)."""
    import yaml

    if len(data) > MAX_ATTESTATION_BYTES:
        raise FormatError(f"attestation: larger than {MAX_ATTESTATION_BYTES} bytes")
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_loader())  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as exc:
        raise FormatError("attestation: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise FormatError(f"attestation: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict):
        raise FormatError("attestation: expected a mapping at the top")
    extra = set(doc) - _TOP_KEYS
    if extra:
        raise FormatError(f"attestation: unknown key {sorted(map(str, extra))[0]}")
    if doc.get("format") != ATTESTATION_FORMAT:
        raise FormatError(f"attestation.format: expected {ATTESTATION_FORMAT}")
    attested_at, valid_until = _date(doc, "attested_at"), _date(doc, "valid_until")
    if valid_until < attested_at:
        raise FormatError("attestation.valid_until: before attested_at")
    controls_doc = doc.get("controls")
    if not isinstance(controls_doc, dict) or not controls_doc:
        raise FormatError("attestation.controls: expected a mapping of control ids")
    controls: dict[str, AttestedControl] = {}
    for name, entry in controls_doc.items():
        where = f"attestation.controls.{name}"
        if not isinstance(name, str) or not _CONTROL_RE.fullmatch(name):
            raise FormatError(f"attestation.controls: {name!r} is not a control id")
        if not isinstance(entry, dict):
            raise FormatError(f"{where}: expected a mapping")
        extra = set(entry) - _CONTROL_KEYS
        if extra:
            raise FormatError(f"{where}: unknown key {sorted(map(str, extra))[0]}")
        if not isinstance(entry.get("in_place"), bool):
            raise FormatError(f"{where}.in_place: expected true or false")
        controls[name] = AttestedControl(entry["in_place"], _text(entry, "evidence", where))
    return Attestation(
        organization=_text(doc, "organization", "attestation"),
        attested_by=_text(doc, "attested_by", "attestation"),
        attested_at=attested_at,
        valid_until=valid_until,
        controls=controls,
    )


def signature_path_for(path: Path) -> Path:
    """Where an attestation's signature lives by default: ``FILE.sig`` beside it."""
    return path.with_name(path.name + ".sig")


def sign_attestation(data: bytes, signer: Signer) -> bytes:
    """Check the YAML parses, then sign its exact bytes; returns the bundle (JSON bytes)."""
    parse_attestation(data)
    return signer.sign(ATTESTATION_PAYLOAD_TYPE, data)


def load_attestation(path: Path, verifier: Verifier, signature: Path | None = None) -> Attestation:
    """Read ``path`` and its signature, verify, and parse.

    Raises :class:`VerificationError` when the signature does not verify with ``verifier``, was
    made over other content (the file was edited after signing) or another payload type.
    """
    signature = signature or signature_path_for(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the attestation ({exc.strerror})") from exc
    try:
        bundle = signature.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{signature}: cannot read the attestation's signature ({exc.strerror})"
        ) from exc
    verified = verifier.verify(bundle)
    if verified.payload_type != ATTESTATION_PAYLOAD_TYPE:
        raise VerificationError(f"{signature}: signs a {verified.payload_type}, not an attestation")
    if verified.payload != data:
        raise VerificationError(f"{path}: changed since it was signed")
    attestation = parse_attestation(data)
    return Attestation(
        organization=attestation.organization,
        attested_by=attestation.attested_by,
        attested_at=attestation.attested_at,
        valid_until=attestation.valid_until,
        controls=attestation.controls,
        signer=verified.signer.subject,
    )
