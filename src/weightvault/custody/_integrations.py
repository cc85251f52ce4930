"""The service's use of the signing and scanning capabilities, in one place.

An upload is registered only if (a) its OMS signature verifies over the staged files with one of
the public keys the model's policy names, and (b) a scan finds nothing at or above "suspicious"
and no file that could not be scanned. Both fail closed: an unreadable file or an unknown format
is a refusal, never "clean". Both go through the capabilities' public APIs
(:func:`weightvault.signing.verify`, :func:`weightvault.scan.scan_paths`).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from weightvault.custody.policy import ModelPolicy
from weightvault.errors import PolicyError, UnsafeFileError, VerificationError, WeightvaultError
from weightvault.scan import Finding, Severity, scan_paths
from weightvault.signing import KeyVerifier, verify

__all__ = ["scan_clean", "verify_model_signature"]


def _load_verifier(pem: str) -> KeyVerifier:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PolicyError("policy.signers: only EC public keys (P-256/P-384/P-521) are supported")
    return KeyVerifier(key)


def verify_model_signature(model_root: Path, signature: bytes, policy: ModelPolicy) -> str:
    """Return a description of the signer whose key verified the tree; raise if none did."""
    if not policy.signers:
        raise PolicyError(
            "upload refused: the model's policy names no signers",
            hint="set policy.signers to the public keys allowed to sign this model",
        )
    signature_file = model_root.parent / "upload.sig"
    signature_file.write_bytes(signature)
    last: WeightvaultError | None = None
    for rule in policy.signers:
        verifier = _load_verifier(rule.public_key_pem)
        # The bundle's signature first (cheap): only the signer it matches hashes the tree.
        try:
            verifier.verify(signature)
        except WeightvaultError as exc:
            last = exc
            continue
        try:
            result = verify(model_root, signature_file, verifier)
        except WeightvaultError as exc:
            raise VerificationError(
                f"upload refused: the files do not match the signature ({exc.one_line()})"
            ) from exc
        subject = ""
        if result.signer is not None:
            subject = result.signer.subject or result.signer.key_fingerprint or ""
        return f"key:{rule.name or subject}"
    raise VerificationError(
        "upload refused: the OMS signature does not verify with any signer the policy allows"
        + (f" ({last.one_line()})" if last else "")
    )


def scan_clean(folder: Path) -> str:
    """Scan the staged files; return a one-line summary or raise :class:`UnsafeFileError`."""
    report = scan_paths([folder])
    if report.findings and report.max_severity >= Severity.SUSPICIOUS:
        worst = max(report.findings, key=lambda f: f.severity)
        raise UnsafeFileError(
            f"upload refused: the scan found {worst.severity.name.lower()} content: "
            f"{_describe(worst, folder)}"
        )
    if report.errors:
        path, message = report.errors[0]
        raise UnsafeFileError(
            f"upload refused: a file could not be scanned: {_relative(path, folder)}: {message}"
        )
    return f"clean ({len(report.files)} files scanned)"


def _relative(path: str, folder: Path) -> str:
    prefix = str(folder) + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _describe(finding: Finding, folder: Path) -> str:
    return f"{_relative(finding.path, folder)}: {finding.message or finding.subject}"
