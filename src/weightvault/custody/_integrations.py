"""The service's use of the signing and scanning capabilities, in one place.

An upload is registered only if (a) its OMS signature verifies over the staged files with one of
the public keys the model's policy names, and (b) a scan finds nothing at or above "suspicious"
and no file that could not be scanned. Both fail closed: a missing capability, an unreadable
file or an unknown format is a refusal, never "clean".
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from weightvault.custody.policy import ModelPolicy
from weightvault.errors import PolicyError, UnsafeFileError, VerificationError, WeightvaultError

__all__ = ["scan_clean", "verify_model_signature"]


def _load_verifier(pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from weightvault.signing.key import KeyVerifier

    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PolicyError("policy.signers: only EC public keys (P-256/P-384/P-521) are supported")
    return KeyVerifier(key)


def _verify_function() -> Any:
    try:
        module = importlib.import_module("weightvault.signing")
        return module.verify
    except (ImportError, AttributeError) as exc:
        raise PolicyError(
            "upload refused: model signature verification (weightvault.signing.verify) is not "
            "available in this build",
        ) from exc


def verify_model_signature(model_root: Path, signature: bytes, policy: ModelPolicy) -> str:
    """Return a description of the signer whose key verified the tree; raise if none did."""
    if not policy.signers:
        raise PolicyError(
            "upload refused: the model's policy names no signers",
            hint="set policy.signers to the public keys allowed to sign this model",
        )
    verify = _verify_function()
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
        signer = getattr(result, "signer", None)
        subject = getattr(signer, "subject", None) or getattr(signer, "key_fingerprint", "")
        return f"key:{rule.name or subject}"
    raise VerificationError(
        "upload refused: the OMS signature does not verify with any signer the policy allows"
        + (f" ({last.one_line()})" if last else "")
    )


def scan_clean(folder: Path) -> str:
    """Scan the staged files; return a one-line summary or raise :class:`UnsafeFileError`."""
    try:
        from weightvault.scan import Severity, scan_paths
    except ImportError as exc:
        raise PolicyError(
            "upload refused: the model scanner (weightvault.scan.scan_paths) is not available",
        ) from exc
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


def _relative(path: object, folder: Path) -> str:
    text = str(path)
    prefix = str(folder) + "/"
    return text[len(prefix) :] if text.startswith(prefix) else text


def _describe(finding: Any, folder: Path) -> str:
    where = _relative(getattr(finding, "path", ""), folder)
    what = getattr(finding, "message", None) or getattr(finding, "name", None) or str(finding)
    return f"{where}: {what}"
