"""Shared state of one file's scan: limits, the policy, and where findings and errors go."""

from __future__ import annotations

from typing import NamedTuple

from weightvault.scan.policy import Policy, Severity
from weightvault.scan.report import Finding

__all__ = ["FileContext", "ScanLimits", "join_location"]


class ScanLimits(NamedTuple):
    """Bounds that keep hostile files from exhausting memory or time."""

    max_archive_depth: int = 4
    """Archives inside archives (zip in tar in zip ...) deeper than this are an error."""
    max_archive_members: int = 100_000
    max_decompressed_bytes: int = 16 << 30
    """Total bytes one compressed member or stream may expand to."""
    max_compression_ratio: int = 1_000
    """Ratio above which a large compressed member is reported as a bomb and not expanded."""
    max_pickle_values: int = 20_000_000
    """Opcodes one pickle may have; each creates at most one value, so this bounds memory."""
    max_kept_string: int = 1 << 16
    """Strings longer than this are skipped, not read (they cannot be module names)."""
    max_line: int = 1 << 20
    """Longest text-opcode argument (protocol 0)."""
    max_nested_depth: int = 4
    """Pickles inside bytes inside pickles, deeper than this are not followed (an error)."""
    max_nested_blob: int = 64 << 20
    """Byte strings up to this size are checked for an embedded pickle."""
    max_json_bytes: int = 64 << 20
    """Largest JSON header or config read (safetensors header, Keras config)."""
    max_spool_bytes: int = 8 << 30
    """Largest compressed member copied to a temporary file to be scanned as a seekable file."""


class FileContext:
    """Collects what one top-level file's scan finds (members of archives included)."""

    __slots__ = ("depth", "errors", "findings", "formats", "limits", "path", "policy")

    def __init__(self, path: str, policy: Policy, limits: ScanLimits) -> None:
        self.path = path
        self.policy = policy
        self.limits = limits
        self.findings: list[Finding] = []
        self.errors: list[str] = []
        self.formats: list[str] = []
        self.depth = 0

    def find(
        self, severity: Severity, kind: str, subject: str, message: str, location: str
    ) -> None:
        self.findings.append(Finding(self.path, location, severity, kind, subject, message))

    def error(self, location: str, message: str) -> None:
        text = " ".join(message.split())
        self.errors.append(f"{location}: {text}" if location else text)


def join_location(prefix: str, member: str) -> str:
    """``outer.zip`` + ``inner/data.pkl`` -> ``outer.zip!inner/data.pkl``."""
    return f"{prefix}!{member}" if prefix else member
