"""A Sigstore bundle's transparency-log material, backed by a weightvault log.

:func:`record_bundle` appends a canonical description of the bundle's DSSE envelope to a log,
signs a checkpoint covering it, and returns the bundle with one ``verificationMaterial.tlogEntries``
item in the Sigstore bundle v0.3 shape (``logIndex``, ``logId.keyId``, ``kindVersion``,
``integratedTime``, ``inclusionProof`` with ``checkpoint.envelope``, ``canonicalizedBody``).
Key-based verifiers (``model_signing``) ignore log entries, so the bundle still verifies there;
:func:`verify_bundle_log_entry` checks the entry offline with only the log's public key.

The entry (``canonicalizedBody``) is canonical JSON binding the exact envelope: the SHA-256 of the
payload, the payload type, every signature, the signer's public-key hint or certificate digest,
and ``integratedTime``. Verification rebuilds it from the bundle and compares byte for byte, so
the entry cannot be moved to another bundle and the envelope cannot be changed under the entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from weightvault import _b64
from weightvault._json import canonical, load_object
from weightvault.errors import FormatError, UsageError, VerificationError
from weightvault.tlog.checkpoint import Checkpoint, WitnessPolicy, verify_checkpoint
from weightvault.tlog.log import TransparencyLog
from weightvault.tlog.merkle import leaf_hash, verify_inclusion
from weightvault.tlog.note import (
    SIG_ED25519,
    NoteSigner,
    VerifierKey,
    load_note_signer,
    parse_note,
)
from weightvault.tlog.proof import LogEntryProof

__all__ = [
    "ENTRY_KIND",
    "ENTRY_VERSION",
    "log_id",
    "record_bundle",
    "record_bundle_at",
    "verify_bundle_log_entry",
]

ENTRY_KIND = "weightvault.dev/dsse"
"""``kindVersion.kind`` of entries this module writes (deliberately not Rekor's ``dsse``)."""
ENTRY_VERSION = "0.0.1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def _load(bundle_json: bytes) -> dict[str, Any]:
    return load_object(bundle_json, "bundle", max_bytes=MAX_BUNDLE_BYTES)


def _obj(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise FormatError(f"{path}.{key}: missing or not an object")
    return value


def _str(parent: dict[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{path}.{key}: missing or not a string")
    return value


def _b64decode(value: str, where: str) -> bytes:
    """Standard base64; other tools' spelling of a bundle is kept as it was written."""
    return _b64.decode(value, where, canonical=False)


def _u64(parent: dict[str, Any], key: str, path: str) -> int:
    """A protobuf-JSON int64: a decimal string (an integer is accepted too), no bools."""
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FormatError(f"{path}.{key}: missing or not an integer")
    text = str(value)
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise FormatError(f"{path}.{key}: not a non-negative decimal integer")
    number = int(text)
    if number >= 1 << 63:
        raise FormatError(f"{path}.{key}: out of range")
    return number


def _entry_body(doc: dict[str, Any], integrated_time: int) -> bytes:
    """The canonical log entry for a bundle: what the log commits to (time included)."""
    envelope = _obj(doc, "dsseEnvelope", "bundle")
    payload = _b64decode(
        _str(envelope, "payload", "bundle.dsseEnvelope"), "bundle.dsseEnvelope.payload"
    )
    payload_type = _str(envelope, "payloadType", "bundle.dsseEnvelope")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise FormatError("bundle.dsseEnvelope.signatures: missing or empty")
    sigs = []
    for index, item in enumerate(signatures):
        where = f"bundle.dsseEnvelope.signatures[{index}]"
        if not isinstance(item, dict):
            raise FormatError(f"{where}: not an object")
        sig = _b64decode(_str(item, "sig", where), f"{where}.sig")
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str):
            raise FormatError(f"{where}.keyid: not a string")
        sigs.append({"keyid": keyid, "sig": _b64.encode(sig)})
    material = _obj(doc, "verificationMaterial", "bundle")
    signer: dict[str, str] = {}
    if isinstance(material.get("publicKey"), dict):
        hint = material["publicKey"].get("hint", "")
        if not isinstance(hint, str):
            raise FormatError("bundle.verificationMaterial.publicKey.hint: not a string")
        signer["publicKeyHint"] = hint
    certificate = material.get("certificate")
    chain = material.get("x509CertificateChain")
    raw_cert = None
    if isinstance(certificate, dict):
        raw_cert = _str(certificate, "rawBytes", "bundle.verificationMaterial.certificate")
    elif (
        isinstance(chain, dict)
        and isinstance(chain.get("certificates"), list)
        and chain["certificates"]
    ):
        first = chain["certificates"][0]
        if isinstance(first, dict):
            raw_cert = _str(first, "rawBytes", "bundle.verificationMaterial.x509CertificateChain")
    if raw_cert is not None:
        der = _b64decode(raw_cert, "bundle.verificationMaterial certificate")
        signer["certificateSha256"] = hashlib.sha256(der).hexdigest()
    body = {
        "apiVersion": ENTRY_VERSION,
        "kind": ENTRY_KIND,
        "integratedTime": integrated_time,
        "spec": {
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "payloadType": payload_type,
            "signatures": sigs,
            "signer": signer,
        },
    }
    return canonical(body, ascii_only=True)


def log_id(log_key: VerifierKey) -> bytes:
    """``logId.keyId``: SHA-256 of the log's public key in DER SubjectPublicKeyInfo (as Rekor)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    der = Ed25519PublicKey.from_public_bytes(log_key.public_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def record_bundle(
    log: TransparencyLog,
    bundle_json: bytes,
    signer_key: NoteSigner,
    *,
    now: Callable[[], float] = time.time,
) -> bytes:
    """Log a bundle's envelope and return the bundle with its ``tlogEntries`` item.

    ``signer_key`` is the log's checkpoint-signing key: a checkpoint covering the new entry is
    signed right away (refused, as always, if the log's history was altered), so the returned
    inclusion proof can be checked offline.
    """
    doc = _load(bundle_json)
    material = _obj(doc, "verificationMaterial", "bundle")
    existing = material.get("tlogEntries") or []
    if not isinstance(existing, list):
        raise FormatError("bundle.verificationMaterial.tlogEntries: not a list")
    if existing:
        raise UsageError(
            "the bundle already has a transparency-log entry (e.g. Rekor)",
            hint="record key, certificate or PKCS#11 bundles; Sigstore bundles are already logged",
        )
    integrated_time = int(now())
    body = _entry_body(doc, integrated_time)
    index = log.append(body)
    checkpoint = log.sign_checkpoint(signer_key)
    proof = log.prove(index, checkpoint=checkpoint)
    tree = Checkpoint.from_text(parse_note(checkpoint).text)
    entry = {
        "logIndex": str(index),
        "logId": {"keyId": _b64.encode(log_id(signer_key.verifier_key))},
        "kindVersion": {"kind": ENTRY_KIND, "version": ENTRY_VERSION},
        "integratedTime": str(integrated_time),
        "inclusionProof": {
            "logIndex": str(index),
            "rootHash": _b64.encode(tree.root),
            "treeSize": str(tree.size),
            "hashes": [_b64.encode(h) for h in proof.hashes],
            "checkpoint": {"envelope": checkpoint.decode()},
        },
        "canonicalizedBody": _b64.encode(body),
    }
    material["tlogEntries"] = [entry]
    return json.dumps(doc, indent=2).encode() + b"\n"


def record_bundle_at(location: str, log_key: str, bundle_json: bytes) -> bytes:
    """:func:`record_bundle` into the log at ``location`` (a SQLite file or a PostgreSQL URL),
    its checkpoint signed with ``log_key`` (a key file or ``pkcs11:`` URI) under the log's own
    origin: what signing a model and logging an attestation both do, opened and closed here."""
    with TransparencyLog.open(location) as opened:
        note_signer = load_note_signer(log_key, name=opened.origin, sig_type=SIG_ED25519)
        return record_bundle(opened, bundle_json, note_signer)


def verify_bundle_log_entry(
    bundle_json: bytes,
    log_public_key: VerifierKey | str,
    *,
    witnesses: WitnessPolicy | None = None,
) -> LogEntryProof:
    """Check offline that the bundle's envelope is in the log (RFC 9162 inclusion).

    Steps: (1) find exactly one entry of kind :data:`ENTRY_KIND`; (2) its ``canonicalizedBody``
    must equal the body rebuilt from this bundle's envelope; (3) ``logId`` must name the log key;
    (4) the checkpoint must verify (log key, witness policy) and agree with ``rootHash`` and
    ``treeSize``; (5) the inclusion path must lead from the body's leaf hash at ``logIndex`` to
    the checkpoint's root.
    """
    key = (
        VerifierKey.from_text(log_public_key) if isinstance(log_public_key, str) else log_public_key
    )
    doc = _load(bundle_json)
    material = _obj(doc, "verificationMaterial", "bundle")
    entries = material.get("tlogEntries")
    if not isinstance(entries, list):
        raise VerificationError(
            "bundle has no transparency-log entry",
            hint="record the signature in the log when signing",
            remedy="log-signature",
        )
    # Step 1.
    ours = [
        (i, e)
        for i, e in enumerate(entries)
        if isinstance(e, dict)
        and isinstance(e.get("kindVersion"), dict)
        and e["kindVersion"].get("kind") == ENTRY_KIND
    ]
    if len(ours) != 1:
        raise VerificationError(
            f"bundle has {len(ours)} weightvault log entries; expected exactly one",
            hint="record the signature in the log when signing",
            remedy="log-signature",
        )
    position, entry = ours[0]
    path = f"bundle.verificationMaterial.tlogEntries[{position}]"
    if entry["kindVersion"].get("version") != ENTRY_VERSION:
        raise FormatError(f"{path}.kindVersion.version: unsupported (want {ENTRY_VERSION})")
    # Step 2.
    body = _b64decode(_str(entry, "canonicalizedBody", path), f"{path}.canonicalizedBody")
    integrated_time = _u64(entry, "integratedTime", path)
    if not hmac.compare_digest(body, _entry_body(doc, integrated_time)):
        raise VerificationError(
            "the log entry does not describe this bundle's DSSE envelope "
            "(envelope or entry was changed, or the entry was copied from another bundle)"
        )
    # Step 3.
    log_id_b64 = _str(_obj(entry, "logId", path), "keyId", f"{path}.logId")
    if not hmac.compare_digest(_b64decode(log_id_b64, f"{path}.logId.keyId"), log_id(key)):
        raise VerificationError("the log entry is from a different log (logId does not match)")
    # Step 4.
    proof_obj = _obj(entry, "inclusionProof", path)
    proof_path = f"{path}.inclusionProof"
    note = _str(_obj(proof_obj, "checkpoint", proof_path), "envelope", f"{proof_path}.checkpoint")
    verified = verify_checkpoint(note.encode(), key, witnesses=witnesses)
    tree = verified.checkpoint
    index = _u64(entry, "logIndex", path)
    if _u64(proof_obj, "logIndex", proof_path) != index:
        raise VerificationError("inclusion proof failed")
    if _u64(proof_obj, "treeSize", proof_path) != tree.size or not hmac.compare_digest(
        _b64decode(_str(proof_obj, "rootHash", proof_path), f"{proof_path}.rootHash"), tree.root
    ):
        raise VerificationError("inclusion proof failed")
    hashes_raw = proof_obj.get("hashes")
    if not isinstance(hashes_raw, list) or len(hashes_raw) > 126:
        raise FormatError(f"{proof_path}.hashes: missing, not a list, or too long")
    hashes = []
    for number, item in enumerate(hashes_raw):
        if not isinstance(item, str):
            raise FormatError(f"{proof_path}.hashes[{number}]: not a string")
        hashes.append(_b64decode(item, f"{proof_path}.hashes[{number}]"))
    # Step 5.
    leaf = leaf_hash(body)
    verify_inclusion(leaf, index, tree.size, hashes, tree.root)
    return LogEntryProof(index=index, leaf_hash=leaf, checkpoint=verified)
