"""weightvault: keep model weights from being stolen, tampered with or misused.

The public API is re-exported here lazily, so ``import weightvault`` stays cheap and the CLI
starts fast. Capability packages: :mod:`weightvault.signing` (sign / verify in the OpenSSF Model
Signing format), :mod:`weightvault.scan`, :mod:`weightvault.crypt`, :mod:`weightvault.tlog`,
:mod:`weightvault.custody`, :mod:`weightvault.tamper`; :mod:`weightvault.pipeline` signs, scans
and logs a model in one call (what ``weightvault sign`` runs).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "WeightvaultError": "weightvault.errors",
    "VerificationError": "weightvault.errors",
    "walk_model": "weightvault.tree",
    "TransparencyLog": "weightvault.tlog",
    "verify_tlog_proof": "weightvault.tlog",
    "verify_export": "weightvault.tlog",
    "record_bundle": "weightvault.tlog",
    "verify_bundle_log_entry": "weightvault.tlog",
    "sign": "weightvault.signing",
    "verify": "weightvault.signing",
    "check": "weightvault.signing",
    "digest": "weightvault.signing",
    "prepare_signature": "weightvault.signing",
    "ManifestOptions": "weightvault.signing",
    "HashAlgorithm": "weightvault.hashing",
    "sign_model": "weightvault.pipeline",
    "check_model": "weightvault.pipeline",
    "digest_model": "weightvault.pipeline",
    "ScanPolicy": "weightvault.pipeline",
    "LogTarget": "weightvault.pipeline",
    "LogRequirement": "weightvault.pipeline",
    "VerificationResult": "weightvault.signing",
    "SignResult": "weightvault.signing",
    "KeySigner": "weightvault.signing.key",
    "KeyVerifier": "weightvault.signing.key",
    "CertificateSigner": "weightvault.signing.certificate",
    "CertificateVerifier": "weightvault.signing.certificate",
    "scan_paths": "weightvault.scan",
    "ScanReport": "weightvault.scan",
    "encrypt_path": "weightvault.crypt",
    "decrypt_path": "weightvault.crypt",
    "rewrap_path": "weightvault.crypt",
    "inspect_path": "weightvault.crypt",
    "open_encrypted": "weightvault.crypt",
    "load_encrypted_safetensors": "weightvault.crypt",
    "AttackSuite": "weightvault.tamper.spec",
    "run_tamper_suite": "weightvault.tamper.evaluate",
    "write_tamper_report": "weightvault.tamper.report",
    "install_hooks": "weightvault.load.hooks",
    "uninstall_hooks": "weightvault.load.hooks",
    "LoadPolicy": "weightvault.load.hooks",
}


def _lazy_attributes(owner: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``owner``: ``names`` maps an attribute to the
    module defining it, imported on first use (and kept, so the next access is plain)."""

    def load(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {owner!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[owner], name, value)
        return value

    return load


__getattr__ = _lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
