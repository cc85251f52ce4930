"""The OMS manifest: resources, serialization parameters, root digest, in-toto statement.

The statement weightvault writes (OMS v1.0, as model-signing 1.1 writes it)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": MODEL_NAME, "digest": {"sha256": ROOT}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {...}, "resources": [{"name", "digest", "algorithm"}, ...]}}

* resources are sorted by path components (``a/b/w.bin`` before ``a-c``), shards by
  (path components, start); readers also accept plain code-point order, which the spec text uses;
* ``ROOT = SHA-256(digest_1 || digest_2 || ... )`` over the raw resource digests in the order
  they appear;
* shard resources are named ``PATH:START:END`` and their algorithm is ``HASH-sharded-SIZE``
  (``sha256-sharded-1000000000``); the name is split at its last two colons, so a ``:`` in a
  file name stays unambiguous;
* the legacy predicate ``https://model_signing/Digests/v0.1`` (model-signing 0.2) carried one
  in-toto subject per file and is read as a ``files``/``sha256`` manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from weightvault.errors import FormatError
from weightvault.hashing import HASH_TYPES, HashAlgorithm
from weightvault.oms._json import (
    field_bool,
    field_list,
    field_object,
    field_str,
    hex_field,
    load_json,
    object_items,
    reject_unknown,
)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "HASH_TYPES",
    "LEGACY_PREDICATE_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Manifest",
    "Resource",
    "Serialization",
    "component_key",
    "parse_statement",
    "shard_name",
    "split_shard_name",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
LEGACY_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"

#: The peer's default shard size (bytes).
DEFAULT_SHARD_SIZE = 1_000_000_000


def recorded_hash_name(hash_type: str) -> str:
    """The name a manifest records for ``hash_type`` (``blake2`` is written ``blake2b``)."""
    return HashAlgorithm.parse(hash_type).oms_name


def _hash_from_recorded(value: str, where: str) -> HashAlgorithm:
    algorithm = HashAlgorithm.from_oms_name(value)
    if algorithm is None:
        raise FormatError(
            f"{where}: unsupported hash type {value!r} (expected {', '.join(HashAlgorithm)})"
        )
    return algorithm


def component_key(name: str) -> tuple[str, ...]:
    """Sort key by path components, the order model-signing writes."""
    return tuple(name.split("/"))


def shard_name(path: str, start: int, end: int) -> str:
    return f"{path}:{start}:{end}"


def split_shard_name(name: str, where: str) -> tuple[str, int, int]:
    """Split ``PATH:START:END`` at its last two colons (a path may itself hold colons)."""
    parts = name.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise FormatError(f"{where}: shard name {name!r} is not PATH:START:END")
    path, start_text, end_text = parts
    if not (start_text.isdigit() and end_text.isdigit()) or not start_text.isascii():
        raise FormatError(f"{where}: shard offsets in {name!r} are not decimal numbers")
    if (len(start_text) > 1 and start_text[0] == "0") or (len(end_text) > 1 and end_text[0] == "0"):
        raise FormatError(f"{where}: shard offsets in {name!r} have leading zeros")
    start, end = int(start_text), int(end_text)
    if end < start:
        raise FormatError(f"{where}: shard {name!r} ends before it starts")
    return path, start, end


def _shard_key(name: str) -> tuple[tuple[str, ...], int, int]:
    path, start, end = split_shard_name(name, "resource")
    return component_key(path), start, end


@dataclass(frozen=True)
class Resource:
    """One hashed object: a whole file (``files``) or a byte range of one (``shards``)."""

    name: str
    digest: bytes
    algorithm: str
    """As recorded: ``sha256``, ``blake2b``, ``blake3`` or ``sha256-sharded-1000000000``."""

    def to_json_obj(self) -> dict[str, str]:
        return {"name": self.name, "digest": self.digest.hex(), "algorithm": self.algorithm}


@dataclass(frozen=True)
class Serialization:
    """How a model was turned into resources; everything a verifier needs to redo it."""

    method: Literal["files", "shards"]
    hash_type: HashAlgorithm
    """A plain name (``"sha256"``) is accepted and stored as its :class:`HashAlgorithm`."""
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] | None = ()
    """Recorded ignored paths; ``None`` when the signature did not record any (older peers)."""
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("files", "shards"):
            raise ValueError(f"unknown serialization method {self.method!r}")
        # frozen: the one coercion of a plain name happens here, before anyone reads it
        object.__setattr__(self, "hash_type", HashAlgorithm.parse(self.hash_type))
        if self.method == "shards" and (self.shard_size is None or self.shard_size <= 0):
            raise ValueError("shards serialization needs a positive shard_size")

    @property
    def resource_algorithm(self) -> str:
        recorded = self.hash_type.oms_name
        if self.method == "shards":
            return f"{recorded}-sharded-{self.shard_size}"
        return recorded

    def to_json_obj(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "method": self.method,
            "hash_type": self.hash_type.oms_name,
            "allow_symlinks": self.allow_symlinks,
        }
        if self.method == "shards":
            doc["shard_size"] = self.shard_size
        if self.ignore_paths:
            doc["ignore_paths"] = list(self.ignore_paths)
        return doc

    @classmethod
    def from_json_obj(cls, obj: dict[str, Any], path: str) -> Serialization:
        method = field_str(obj, "method", path)
        if method == "files":
            allowed = {"method", "hash_type", "allow_symlinks", "ignore_paths"}
        elif method == "shards":
            allowed = {"method", "hash_type", "allow_symlinks", "ignore_paths", "shard_size"}
        else:
            raise FormatError(f"{path}.method: unknown serialization method {method!r}")
        reject_unknown(obj, allowed, path)
        hash_type = _hash_from_recorded(field_str(obj, "hash_type", path), f"{path}.hash_type")
        allow_symlinks = field_bool(obj, "allow_symlinks", path)
        ignore: tuple[str, ...] | None = None
        if "ignore_paths" in obj:
            items = field_list(obj, "ignore_paths", path)
            for index, item in enumerate(items):
                if not isinstance(item, str):
                    raise FormatError(f"{path}.ignore_paths[{index}]: expected a string")
            ignore = tuple(sorted(set(items)))
        shard_size: int | None = None
        if method == "shards":
            raw = obj.get("shard_size")
            # The peer's protobuf round trip turns the integer into a float: accept an integral
            # float, nothing else.
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise FormatError(f"{path}.shard_size: expected a positive integer")
            if isinstance(raw, float) and (not math.isfinite(raw) or not raw.is_integer()):
                raise FormatError(f"{path}.shard_size: expected a positive integer")
            shard_size = int(raw)
            if shard_size <= 0:
                raise FormatError(f"{path}.shard_size: expected a positive integer")
        return cls(method, hash_type, allow_symlinks, ignore, shard_size)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    """A model's resources in signed order, with the parameters that produced them."""

    model_name: str
    resources: tuple[Resource, ...]
    serialization: Serialization
    legacy: bool = False
    """Read from a model-signing 0.2 statement (no root digest, no serialization recorded)."""

    @property
    def root_digest(self) -> bytes:
        """SHA-256 over the raw resource digests in manifest order."""
        hasher = hashlib.sha256()
        for resource in self.resources:
            hasher.update(resource.digest)
        return hasher.digest()

    def by_name(self) -> dict[str, Resource]:
        return {r.name: r for r in self.resources}

    @classmethod
    def build(
        cls, model_name: str, resources: list[Resource], serialization: Serialization
    ) -> Manifest:
        """Sort resources the way model-signing writes them (path components, then offsets)."""
        if serialization.method == "shards":
            ordered = sorted(resources, key=lambda r: _shard_key(r.name))
        else:
            ordered = sorted(resources, key=lambda r: component_key(r.name))
        names = [r.name for r in ordered]
        if len(set(names)) != len(names):
            raise ValueError("duplicate resource names")
        return cls(model_name, tuple(ordered), serialization)

    def to_statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest.hex()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": self.serialization.to_json_obj(),
                "resources": [r.to_json_obj() for r in self.resources],
            },
        }

    def to_payload(self) -> bytes:
        """The DSSE payload bytes: the statement as indented JSON (the peer's layout)."""
        return json.dumps(self.to_statement(), indent=2).encode("utf-8")


def _check_order(names: list[str], method: str, where: str) -> None:
    """Resources must be sorted (component or code-point order) and unique."""
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise FormatError(f"{where}: duplicate resource {name!r}")
            seen.add(name)
    if method == "shards":
        component_order = sorted(names, key=_shard_key)
    else:
        component_order = sorted(names, key=component_key)
    if names != component_order and names != sorted(names):
        raise FormatError(f"{where}: resources are not in canonical order")


def _parse_v1(doc: dict[str, Any]) -> Manifest:
    reject_unknown(doc, {"_type", "subject", "predicateType", "predicate"}, "payload")
    subjects = field_list(doc, "subject", "payload")
    if len(subjects) != 1:
        raise FormatError(f"payload.subject: expected exactly one subject, got {len(subjects)}")
    subject = subjects[0]
    if not isinstance(subject, dict):
        raise FormatError("payload.subject[0]: expected an object")
    reject_unknown(subject, {"name", "digest", "uri", "annotations"}, "payload.subject[0]")
    model_name = field_str(subject, "name", "payload.subject[0]", optional=True)
    digest_obj = field_object(subject, "digest", "payload.subject[0]")
    root = hex_field(digest_obj.get("sha256"), "payload.subject[0].digest.sha256")
    if len(root) != 32:
        raise FormatError("payload.subject[0].digest.sha256: not a SHA-256 digest")

    predicate = field_object(doc, "predicate", "payload")
    # OMS v1.0: verifiers ignore predicate fields other than these two.
    serialization = Serialization.from_json_obj(
        field_object(predicate, "serialization", "payload.predicate"),
        "payload.predicate.serialization",
    )
    raw_resources = field_list(predicate, "resources", "payload.predicate")
    if not raw_resources:
        raise FormatError("payload.predicate.resources: empty; a signature must cover files")
    expected_algorithm = serialization.resource_algorithm
    digest_size = serialization.hash_type.digest_size
    resources: list[Resource] = []
    fields = {"name", "digest", "algorithm"}
    for where, item in object_items(raw_resources, "payload.predicate.resources", fields):
        name = field_str(item, "name", where)
        if not name:
            raise FormatError(f"{where}.name: empty")
        algorithm = field_str(item, "algorithm", where)
        if algorithm != expected_algorithm:
            raise FormatError(
                f"{where}.algorithm: {algorithm!r} does not match the serialization"
                f" ({expected_algorithm!r})"
            )
        digest = hex_field(item.get("digest"), f"{where}.digest")
        if len(digest) != digest_size:
            raise FormatError(f"{where}.digest: wrong length for {serialization.hash_type}")
        if serialization.method == "shards":
            split_shard_name(name, f"{where}.name")
        resources.append(Resource(name, digest, algorithm))
    _check_order([r.name for r in resources], serialization.method, "payload.predicate.resources")
    manifest = Manifest(model_name, tuple(resources), serialization)
    if manifest.root_digest != root:
        raise FormatError(
            "payload.subject[0].digest.sha256: does not match the resources (manifest is"
            " inconsistent)"
        )
    return manifest


def _parse_legacy(doc: dict[str, Any]) -> Manifest:
    subjects = field_list(doc, "subject", "payload")
    if not subjects:
        raise FormatError("payload.subject: empty; a signature must cover files")
    resources: list[Resource] = []
    for where, subject in object_items(
        subjects, "payload.subject", {"name", "digest", "annotations"}
    ):
        name = field_str(subject, "name", where)
        digest = hex_field(field_object(subject, "digest", where).get("sha256"), f"{where}.digest")
        if len(digest) != 32:
            raise FormatError(f"{where}.digest.sha256: not a SHA-256 digest")
        resources.append(Resource(name, digest, "sha256"))
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise FormatError("payload.subject: duplicate file names")
    serialization = Serialization("files", HashAlgorithm.SHA256, False, None)
    ordered = tuple(sorted(resources, key=lambda r: component_key(r.name)))
    return Manifest("", ordered, serialization, legacy=True)


def parse_statement(payload: bytes) -> Manifest:
    """Read the manifest out of a (verified) DSSE payload; :class:`FormatError` names the field."""
    doc = load_json(payload, "payload")
    statement_type = field_str(doc, "_type", "payload")
    if statement_type != STATEMENT_TYPE:
        raise FormatError(f"payload._type: expected {STATEMENT_TYPE}, got {statement_type!r}")
    predicate_type = field_str(doc, "predicateType", "payload")
    if predicate_type == PREDICATE_TYPE:
        return _parse_v1(doc)
    if predicate_type == LEGACY_PREDICATE_TYPE:
        return _parse_legacy(doc)
    raise FormatError(
        f"payload.predicateType: {predicate_type!r} is not a model signature"
        f" (expected {PREDICATE_TYPE})"
    )
