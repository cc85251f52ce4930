"""A model's release policy (the ``release`` field of its custody policy): what must exist
before a version may be granted for ``deploy`` or ``release``, and who may sign each piece.

Evaluation suites with thresholds (optionally run on a fine-tuned version derived from it:
``after_enhancement``), a risk assessment, and optionally an external auditor's statement. Each
names who may sign it: ``"custody"`` (the signed result of a custody ``evaluate`` job, verified
against the custody's transparency log), a public key, a certificate identity under a trust
root, or a Sigstore (keyless) identity and OIDC issuer. Parsing is strict and names the field;
the decision over attestations is :mod:`weightvault.custody.gates_policy`'s.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from weightvault.errors import FormatError

__all__ = [
    "AUDIT_STATEMENT",
    "CUSTODY",
    "GATED_PURPOSES",
    "RISK_ASSESSMENT",
    "ReleasePolicy",
    "Requirement",
    "SignerSpec",
    "parse_time",
]

RISK_ASSESSMENT = "https://weightvault.dev/attestation/risk-assessment/v1"
AUDIT_STATEMENT = "https://weightvault.dev/attestation/audit-statement/v1"
CUSTODY = "custody"
"""The signer name of a custody ``evaluate`` job's own signed result."""
GATED_PURPOSES = ("deploy", "release")
_MAX_REQUIREMENTS = 32
_MAX_SIGNERS = 16
_MAX_PEM = 16384
_MAX_TRUST_CONFIG = 64 * 1024
_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"


def parse_time(value: object, where: str) -> dt.datetime:
    """An RFC 3339 time with an offset, as attestations write them."""
    if not isinstance(value, str) or "T" not in value:
        raise FormatError(f"{where}: expected an RFC 3339 time (2026-12-06T06:00:00Z)")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise FormatError(f"{where}: not an RFC 3339 time ({value[:40]!r})") from exc
    if moment.tzinfo is None:
        raise FormatError(f"{where}: the time needs an offset (Z or +00:00)")
    return moment


def _text(doc: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = doc.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise FormatError(f"{where}.{name}: expected a non-empty string")
    return value


def _fields(doc: object, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: expected an object")
    extra = set(doc) - allowed
    if extra:
        raise FormatError(f"{where}: unknown field {sorted(extra)[0]}")
    return doc


def _seconds(doc: dict[str, Any], name: str, where: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10 * 366 * 86400:
        raise FormatError(f"{where}.{name}: expected whole seconds between 1 and ten years")
    return value


@dataclass(frozen=True)
class SignerSpec:
    """One identity allowed to sign a requirement's attestation."""

    name: str
    """``custody``, or a label for a key or an identity (shown in decisions)."""
    public_key_pem: str = ""
    identity: str = ""
    """A certificate identity (SAN e-mail, URI or DNS name), checked under ``trust_root_pem``,
    or, with ``sigstore_issuer``, the Sigstore identity."""
    trust_root_pem: str = ""
    sigstore_issuer: str = ""
    """A Sigstore (keyless) signer: the OIDC issuer its Fulcio certificate records."""
    sigstore_trust_config: str = ""
    """A Sigstore client trust config (canonical JSON) for a private Sigstore deployment; empty:
    the public-good trusted root sigstore-python ships (used offline)."""

    @property
    def is_custody(self) -> bool:
        return self.name == CUSTODY and not self.public_key_pem and not self.identity

    @property
    def is_sigstore(self) -> bool:
        return bool(self.sigstore_issuer)

    def to_json(self) -> object:
        if self.is_custody:
            return CUSTODY
        doc: dict[str, Any] = {"name": self.name}
        if self.public_key_pem:
            doc["public_key_pem"] = self.public_key_pem
        elif self.is_sigstore:
            sigstore: dict[str, Any] = {"identity": self.identity, "issuer": self.sigstore_issuer}
            if self.sigstore_trust_config:
                sigstore["trust_config"] = json.loads(self.sigstore_trust_config)
            doc["sigstore"] = sigstore
        else:
            doc.update(identity=self.identity, trust_root_pem=self.trust_root_pem)
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str) -> SignerSpec:
        if doc == CUSTODY:
            return cls(CUSTODY)
        body = _fields(
            doc, {"name", "public_key_pem", "identity", "trust_root_pem", "sigstore"}, where
        )
        name = _text(body, "name", where)
        if name == CUSTODY:
            raise FormatError(f"{where}.name: 'custody' is reserved for custody's own results")
        given = [k for k in ("public_key_pem", "identity", "sigstore") if body.get(k)]
        if len(given) != 1:
            raise FormatError(f"{where}: give exactly one of public_key_pem, identity or sigstore")
        # A field the chosen kind does not use would be ignored: refuse it instead (a reader of
        # the policy must see exactly what is checked).
        uses = {"public_key_pem": {"public_key_pem"}, "sigstore": {"sigstore"}}.get(
            given[0], {"identity", "trust_root_pem"}
        )
        stray = set(body) - uses - {"name"}
        if stray:
            raise FormatError(f"{where}.{sorted(stray)[0]}: not used with {given[0]}")
        if "sigstore" in body:
            return cls._sigstore(name, body["sigstore"], f"{where}.sigstore")
        pem = body.get("public_key_pem", "")
        if pem:
            if not isinstance(pem, str) or not pem.startswith("-----BEGIN PUBLIC KEY-----"):
                raise FormatError(f"{where}.public_key_pem: expected a PEM public key")
            if len(pem) > _MAX_PEM:
                raise FormatError(f"{where}.public_key_pem: longer than {_MAX_PEM} characters")
            cls._load_key(pem, where)
            return cls(name, public_key_pem=pem)
        identity = _text(body, "identity", where)
        root = body.get("trust_root_pem")
        if not isinstance(root, str) or "-----BEGIN CERTIFICATE-----" not in root:
            raise FormatError(f"{where}.trust_root_pem: expected a PEM certificate")
        if len(root) > _MAX_PEM:
            raise FormatError(f"{where}.trust_root_pem: longer than {_MAX_PEM} characters")
        return cls(name, identity=identity, trust_root_pem=root)

    @classmethod
    def _sigstore(cls, name: str, doc: object, where: str) -> SignerSpec:
        """``{"identity", "issuer"[, "trust_config"]}``: both pinned exactly (no patterns), as
        Sigstore proves only which identity signed, never that it should have."""
        body = _fields(doc, {"identity", "issuer", "trust_config"}, where)
        identity = _text(body, "identity", where)
        issuer = _text(body, "issuer", where)
        if not issuer.startswith("https://") or any(c.isspace() for c in issuer):
            raise FormatError(f"{where}.issuer: expected the OIDC issuer's https:// URL")
        if any(c.isspace() or c == "*" for c in identity):
            raise FormatError(f"{where}.identity: expected one exact identity (no spaces or *)")
        config = ""
        if "trust_config" in body:
            raw = body["trust_config"]
            if not isinstance(raw, dict) or raw.get("mediaType") != _TRUST_CONFIG_MEDIA_TYPE:
                raise FormatError(
                    f"{where}.trust_config: expected a Sigstore client trust config "
                    f"(mediaType {_TRUST_CONFIG_MEDIA_TYPE})"
                )
            if not isinstance(raw.get("trustedRoot"), dict):
                raise FormatError(f"{where}.trust_config.trustedRoot: missing")
            config = json.dumps(raw, sort_keys=True, separators=(",", ":"))
            if len(config) > _MAX_TRUST_CONFIG:
                raise FormatError(
                    f"{where}.trust_config: longer than {_MAX_TRUST_CONFIG} characters"
                )
        return cls(name, identity=identity, sigstore_issuer=issuer, sigstore_trust_config=config)

    @staticmethod
    def _load_key(pem: str, where: str) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise FormatError(f"{where}.public_key_pem: not a public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise FormatError(f"{where}.public_key_pem: expected an EC public key")
        return key

    def verifier(self) -> Any:
        """The :class:`~weightvault.signing.Verifier` for this signer's bundles (a Sigstore
        one may raise :class:`~weightvault.errors.KeyMaterialError`: no extra, bad config)."""
        if self.public_key_pem:
            from weightvault.signing import KeyVerifier

            return KeyVerifier(self._load_key(self.public_key_pem, "signer"))
        if self.is_sigstore:
            return _sigstore_verifier(
                self.identity, self.sigstore_issuer, self.sigstore_trust_config
            )
        from cryptography import x509

        from weightvault.signing.certificate import CertificateVerifier

        roots = x509.load_pem_x509_certificates(self.trust_root_pem.encode("ascii"))
        return CertificateVerifier(roots, identity=self.identity)

    def accepted_ids(self) -> list[str]:
        """What :func:`~weightvault.attest.verify_attestation` lists for this signer."""
        if self.public_key_pem:
            from weightvault.oms.bundle import public_key_hint

            return [public_key_hint(self._load_key(self.public_key_pem, "signer"))]
        return [self.identity]


@functools.lru_cache(maxsize=32)
def _sigstore_verifier(identity: str, issuer: str, trust_config: str) -> Any:
    """A Sigstore verifier pinned to one identity and issuer, built once per policy signer
    (loading a trusted root costs milliseconds; a gate decision may check many bundles).

    sigstore-python reads a client trust config from a file only, so a policy's inline one is
    written to a private temporary folder for the moment of loading it; verification itself is
    offline and keeps nothing on disk.
    """
    from weightvault.signing.sigstore import SigstoreVerifier

    if not trust_config:
        return SigstoreVerifier(identity, issuer, offline=True)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="wv-sigstore-") as folder:
        path = Path(folder) / "trust-config.json"
        path.write_text(trust_config, encoding="utf-8")
        return SigstoreVerifier(identity, issuer, trust_config=path)


@dataclass(frozen=True)
class Requirement:
    """One attestation a gated grant needs."""

    kind: str
    """``evaluation``, ``risk-assessment`` or ``audit-statement``."""
    name: str
    """How refusals name it (an evaluation's ``name``; the kind otherwise)."""
    signers: tuple[SignerSpec, ...]
    suite: str = ""
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    after_enhancement: bool = False
    external_allowed: bool = False
    """Evaluations produced outside custody count only when this is true (and signer listed)."""
    max_age_s: int | None = None
    inputs_digest: str = ""
    """For custody results: the job's inputs must be exactly these (``sha256:<hex>`` of the
    job's inputs, as its result records), so a requester cannot pick an easy dataset."""

    @property
    def label(self) -> str:
        if self.kind == "evaluation":
            after = " after enhancement" if self.after_enhancement else ""
            return f"evaluation {self.name!r} (suite {self.suite}{after})"
        return self.kind

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"signers": [s.to_json() for s in self.signers]}
        if self.max_age_s is not None:
            doc["max_age_s"] = self.max_age_s
        if self.kind == "evaluation":
            doc.update(
                name=self.name,
                suite=self.suite,
                thresholds=self.thresholds,
                after_enhancement=self.after_enhancement,
                external_allowed=self.external_allowed,
            )
            if self.inputs_digest:
                doc["inputs_digest"] = self.inputs_digest
        return doc


def _signers(doc: dict[str, Any], where: str, *, custody_ok: bool) -> tuple[SignerSpec, ...]:
    raw = doc.get("signers")
    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_SIGNERS:
        raise FormatError(f"{where}.signers: expected a list of 1 to {_MAX_SIGNERS} signers")
    specs = tuple(SignerSpec.from_json(s, f"{where}.signers[{i}]") for i, s in enumerate(raw))
    if not custody_ok and any(s.is_custody for s in specs):
        raise FormatError(f"{where}.signers: only evaluations can be produced by custody")
    if len({s.name for s in specs}) != len(specs):
        raise FormatError(f"{where}.signers: a name is listed twice")
    return specs


def _thresholds(doc: object, where: str) -> dict[str, dict[str, float]]:
    if not isinstance(doc, dict) or not doc:
        raise FormatError(f"{where}: expected an object of metric: {{min, max}}")
    out: dict[str, dict[str, float]] = {}
    for metric, bounds in doc.items():
        at = f"{where}.{metric}"
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
            raise FormatError(f"{at}: expected an object with min and/or max")
        for bound, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FormatError(f"{at}.{bound}: expected a number")
        out[str(metric)] = {b: float(v) for b, v in bounds.items()}
    return out


@dataclass(frozen=True)
class ReleasePolicy:
    """What a version needs before a ``deploy`` or ``release`` grant (the policy's ``release``)."""

    evaluations: tuple[Requirement, ...] = ()
    risk_assessment: Requirement | None = None
    auditor: Requirement | None = None

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        extra = tuple(r for r in (self.risk_assessment, self.auditor) if r is not None)
        return (*self.evaluations, *extra)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"evaluations": [r.to_json() for r in self.evaluations]}
        if self.risk_assessment is not None:
            doc["risk_assessment"] = self.risk_assessment.to_json()
        if self.auditor is not None:
            doc["auditor"] = self.auditor.to_json()
        return doc

    @classmethod
    def from_dict(cls, doc: object, where: str = "policy.release") -> ReleasePolicy:
        body = _fields(doc, {"evaluations", "risk_assessment", "auditor"}, where)
        raw = body.get("evaluations", [])
        if not isinstance(raw, list) or len(raw) > _MAX_REQUIREMENTS:
            raise FormatError(f"{where}.evaluations: expected a list of at most 32")
        evaluations = []
        allowed = {
            "name",
            "suite",
            "thresholds",
            "after_enhancement",
            "external_allowed",
            "signers",
            "max_age_s",
            "inputs_digest",
        }
        for index, item in enumerate(raw):
            at = f"{where}.evaluations[{index}]"
            spec = _fields(item, allowed, at)
            for flag in ("after_enhancement", "external_allowed"):
                if not isinstance(spec.get(flag, False), bool):
                    raise FormatError(f"{at}.{flag}: expected true or false")
            signers = _signers(spec, at, custody_ok=True)
            external = bool(spec.get("external_allowed", False))
            if not external and not any(s.is_custody for s in signers):
                raise FormatError(
                    f"{at}.signers: without external_allowed only 'custody' can sign; "
                    "list 'custody' or allow external evaluators"
                )
            inputs_digest = spec.get("inputs_digest", "")
            if inputs_digest and (
                not isinstance(inputs_digest, str)
                or not inputs_digest.startswith("sha256:")
                or len(inputs_digest) != 71
            ):
                raise FormatError(f"{at}.inputs_digest: expected sha256:<64 hex digits>")
            evaluations.append(
                Requirement(
                    kind="evaluation",
                    name=_text(spec, "name", at),
                    signers=signers,
                    suite=_text(spec, "suite", at),
                    thresholds=_thresholds(spec.get("thresholds"), f"{at}.thresholds"),
                    after_enhancement=bool(spec.get("after_enhancement", False)),
                    external_allowed=external,
                    max_age_s=_seconds(spec, "max_age_s", at),
                    inputs_digest=inputs_digest,
                )
            )
        if len({(r.name) for r in evaluations}) != len(evaluations):
            raise FormatError(f"{where}.evaluations: a name is used twice")

        def document(name: str) -> Requirement | None:
            if name not in body:
                return None
            at = f"{where}.{name}"
            spec = _fields(body[name], {"signers", "max_age_s"}, at)
            kind = "risk-assessment" if name == "risk_assessment" else "audit-statement"
            return Requirement(
                kind=kind,
                name=kind,
                signers=_signers(spec, at, custody_ok=False),
                max_age_s=_seconds(spec, "max_age_s", at),
            )

        policy = cls(tuple(evaluations), document("risk_assessment"), document("auditor"))
        if not policy.requirements:
            raise FormatError(f"{where}: names no requirement (leave it out instead)")
        return policy
