"""The in-toto Statement v1 an attestation signs, and the subjects it binds.

A subject is a model's (or a dataset's) OMS root digest: the ``sha256`` that ``weightvault
sign`` writes as the signature's subject, over the same files hashed the same way. Two
annotations let a verifier redo it without the signature: ``role`` (``model`` or ``dataset``)
and ``serialization`` (the OMS serialization parameters the digest was computed with)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "tiny-model", "digest": {"sha256": ROOT},
                  "annotations": {"role": "model", "serialization": {...}}}],
     "predicateType": "https://weightvault.dev/attestation/eval-results/v1",
     "predicate": {...}}

The payload is the statement in canonical JSON (sorted keys, no spaces); parsing is strict
(duplicate keys, unknown fields, non-hex digests refused, naming the field).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightvault._json import canonical, load_object
from weightvault.attest._predicates import TRAINING_PROVENANCE, check_predicate
from weightvault.errors import FormatError
from weightvault.oms.manifest import Serialization

__all__ = [
    "STATEMENT_TYPE",
    "Statement",
    "Subject",
    "digest_subject",
    "make_statement",
    "parse_statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: An attestation payload larger than this is refused before parsing.
MAX_STATEMENT_BYTES = 16 * 1024 * 1024
_ROLES = ("model", "dataset")


@dataclass(frozen=True)
class Subject:
    """What an attestation is about: a name and the OMS root digest of its files."""

    name: str
    digest: bytes
    """The 32-byte OMS root digest (``sha256``)."""
    role: str = "model"
    """``model`` or ``dataset``."""
    serialization: Serialization | None = None
    """How the digest was computed (``None``: not recorded; then sha256 over whole files)."""

    def __post_init__(self) -> None:
        if len(self.digest) != hashlib.sha256().digest_size:
            raise ValueError("a subject digest is a 32-byte SHA-256 root digest")
        if self.role not in _ROLES:
            raise ValueError(f"role must be one of {', '.join(_ROLES)}")

    def to_json_obj(self) -> dict[str, Any]:
        annotations: dict[str, Any] = {"role": self.role}
        if self.serialization is not None:
            annotations["serialization"] = self.serialization.to_json_obj()
        return {
            "name": self.name,
            "digest": {"sha256": self.digest.hex()},
            "annotations": annotations,
        }

    @classmethod
    def from_json_obj(cls, obj: Any, where: str) -> Subject:
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: expected an object")
        for key in obj:
            if key not in ("name", "digest", "annotations"):
                raise FormatError(f"{where}.{key}: unknown field")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{where}.name: expected a non-empty string")
        digests = obj.get("digest")
        if not isinstance(digests, dict) or not isinstance(digests.get("sha256"), str):
            raise FormatError(f"{where}.digest.sha256: missing")
        hex_digest = digests["sha256"]
        if len(hex_digest) != 64 or hex_digest.strip("0123456789abcdef"):
            raise FormatError(f"{where}.digest.sha256: not 64 lowercase hex digits")
        annotations = obj.get("annotations", {})
        if not isinstance(annotations, dict):
            raise FormatError(f"{where}.annotations: expected an object")
        role = annotations.get("role", "model")
        if role not in _ROLES:
            raise FormatError(f"{where}.annotations.role: expected one of {', '.join(_ROLES)}")
        serialization = None
        if "serialization" in annotations:
            recorded = annotations["serialization"]
            if not isinstance(recorded, dict):
                raise FormatError(f"{where}.annotations.serialization: expected an object")
            serialization = Serialization.from_json_obj(
                recorded, f"{where}.annotations.serialization"
            )
        return cls(name, bytes.fromhex(hex_digest), role, serialization)


@dataclass(frozen=True)
class Statement:
    """An in-toto Statement v1 about one model (and, for provenance, its datasets)."""

    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: dict[str, Any]
    payload: bytes = field(default=b"", repr=False, compare=False)
    """The exact bytes parsed or signed (canonical JSON when built here)."""

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_json_obj() for s in self.subjects],
            "predicateType": self.predicate_type,
            "predicate": self.predicate,
        }

    def to_payload(self) -> bytes:
        """The DSSE payload: the bytes parsed, or canonical JSON for a statement built here."""
        return self.payload or canonical(self.to_json_obj())

    def subject_with(self, digest: bytes) -> Subject | None:
        """The subject whose root digest is ``digest``, if any."""
        for subject in self.subjects:
            if subject.digest == digest:
                return subject
        return None


def _validate_with_bindings(document: dict[str, Any]) -> None:
    """The ``in-toto-attestation`` bindings' own Statement check (type, subjects, digests)."""
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from in_toto_attestation.v1 import (  # type: ignore[import-untyped]
        statement as intoto_statement,
    )
    from in_toto_attestation.v1 import statement_pb2

    try:
        message = json_format.ParseDict(document, statement_pb2.Statement())
        intoto_statement.Statement.copy_from_pb(message).validate()
    except (json_format.ParseError, ValueError) as exc:
        raise FormatError(f"statement: not an in-toto Statement v1 ({exc})") from exc


def _check_provenance_subjects(statement: Statement) -> None:
    """Training provenance: each dataset subject is also a resolved dependency, same digest."""
    if statement.predicate_type != TRAINING_PROVENANCE:
        return
    definition = statement.predicate.get("buildDefinition", {})
    resolved = {
        dep.get("digest", {}).get("sha256")
        for dep in definition.get("resolvedDependencies", [])
        if isinstance(dep, dict) and isinstance(dep.get("digest"), dict)
    }
    for subject in statement.subjects:
        if subject.role == "dataset" and subject.digest.hex() not in resolved:
            raise FormatError(
                f"subject {subject.name}: a dataset subject missing from "
                "predicate.buildDefinition.resolvedDependencies"
            )


def parse_statement(payload: bytes) -> Statement:
    """Parse an attestation payload strictly (:class:`FormatError` naming the field)."""
    document = load_object(payload, "statement", max_bytes=MAX_STATEMENT_BYTES)
    for key in document:
        if key not in ("_type", "subject", "predicateType", "predicate"):
            raise FormatError(f"statement.{key}: unknown field")
    if document.get("_type") != STATEMENT_TYPE:
        raise FormatError(f"statement._type: expected {STATEMENT_TYPE}")
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise FormatError("statement.subject: expected a non-empty list")
    subjects = tuple(
        Subject.from_json_obj(item, f"statement.subject[{i}]")
        for i, item in enumerate(raw_subjects)
    )
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise FormatError("statement.predicateType: expected a non-empty string")
    predicate = document.get("predicate")
    check_predicate(predicate_type, predicate, "statement.predicate")
    assert isinstance(predicate, dict)
    _validate_with_bindings(document)
    statement = Statement(subjects, predicate_type, predicate, bytes(payload))
    _check_provenance_subjects(statement)
    return statement


def make_statement(
    subject: Subject,
    predicate_type: str,
    predicate: dict[str, Any],
    *,
    datasets: Sequence[Subject] = (),
) -> Statement:
    """A statement about ``subject`` (a model) carrying ``predicate``, checked as a verifier
    will check it; ``datasets`` are further subjects (training provenance: each is added to
    ``buildDefinition.resolvedDependencies`` when not already there)."""
    from weightvault.attest._predicates import predicate_type_for

    uri = predicate_type_for(predicate_type)
    body = dict(predicate)
    dataset_subjects = tuple(
        d if d.role == "dataset" else Subject(d.name, d.digest, "dataset", d.serialization)
        for d in datasets
    )
    if dataset_subjects and uri == TRAINING_PROVENANCE:
        body = _with_dependencies(body, dataset_subjects)
    statement = Statement((subject, *dataset_subjects), uri, body)
    document = statement.to_json_obj()
    check_predicate(uri, document["predicate"], "predicate")
    _validate_with_bindings(document)
    _check_provenance_subjects(statement)
    return Statement(statement.subjects, uri, body, canonical(document))


def _with_dependencies(predicate: dict[str, Any], datasets: Sequence[Subject]) -> dict[str, Any]:
    definition = predicate.get("buildDefinition")
    if not isinstance(definition, dict):
        return predicate  # the predicate check names what is missing
    dependencies = list(definition.get("resolvedDependencies", []))
    present = {
        d.get("digest", {}).get("sha256")
        for d in dependencies
        if isinstance(d, dict) and isinstance(d.get("digest"), dict)
    }
    for dataset in datasets:
        if dataset.digest.hex() not in present:
            dependencies.append(
                {
                    "name": dataset.name,
                    "digest": {"sha256": dataset.digest.hex()},
                    "annotations": {"role": "dataset"},
                }
            )
    return {**predicate, "buildDefinition": {**definition, "resolvedDependencies": dependencies}}


def digest_subject(
    path: str | os.PathLike[str],
    *,
    role: str = "model",
    serialization: Serialization | None = None,
    signature_path: str | os.PathLike[str] | None = None,
    max_workers: int | None = None,
) -> Subject:
    """The subject for a model or dataset on disk: its OMS root digest, hashed now.

    The parameters are, in order: ``serialization`` if given; else those recorded in the
    signature beside it (``signature_path``, default ``MODEL/model.sig``), so the digest is the
    one that signature vouches for; else sha256 over whole files. The signature is read only
    for its parameters (not trusted): the digest always comes from the files.
    """
    from weightvault.signing import ManifestOptions, plan_model, signature_path_for

    root = Path(path)
    sig = signature_path_for(root, signature_path)
    params = serialization if serialization is not None else _signed_parameters(sig)
    if params is None:
        options = ManifestOptions(max_workers=max_workers)
    else:
        options = ManifestOptions(
            hash_type=params.hash_type,
            serialization=params.method,
            shard_size=params.shard_size,
            ignore_paths=params.ignore_paths or (),
            ignore_git_paths=params.ignore_paths is None,
            allow_symlinks=params.allow_symlinks,
            max_workers=max_workers,
        )
    plan = plan_model(root, signature_path=sig, options=options)
    manifest = plan.manifest()
    return Subject(manifest.model_name, manifest.root_digest, role, manifest.serialization)


def _signed_parameters(signature_path: Path) -> Serialization | None:
    """The serialization recorded in a signature file, or ``None`` without a readable one."""
    from weightvault.oms.bundle import parse_bundle
    from weightvault.oms.manifest import parse_statement as parse_oms_statement

    try:
        data = signature_path.read_bytes()
    except OSError:
        return None
    try:
        manifest = parse_oms_statement(parse_bundle(data).payload)
    except FormatError:
        return None
    return None if manifest.legacy else manifest.serialization
