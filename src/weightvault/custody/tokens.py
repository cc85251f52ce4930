"""API tokens: 256 random bits, shown once, stored only as SHA-256, compared in constant time.

Format: ``wvt_<id>_<secret>``: the 16-hex-digit id finds the row, the 43-character base64url
secret is hashed and compared with :func:`hmac.compare_digest`. A token for a revoked id, an
unknown id, or a wrong secret all fail with the same message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["IssuedToken", "hash_secret", "issue_token", "parse_token", "secret_matches"]

_TOKEN_RE = re.compile(r"wvt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``text`` is shown once; only ``secret_sha256`` is stored."""

    token_id: str
    """16 hex digits: finds the token's row (not secret)."""
    text: str
    """``wvt_<id>_<secret>``, what the holder presents."""
    secret_sha256: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"IssuedToken(token_id={self.token_id!r})"


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret part (a 256-bit random secret needs no slow hash)."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def issue_token() -> IssuedToken:
    """Create a new random token."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(token_id, f"wvt_{token_id}_{secret}", hash_secret(secret))


def parse_token(text: str) -> tuple[str, str] | None:
    """Split a token into (id, secret); None when it is not shaped like one."""
    if len(text) > 128:
        return None
    match = _TOKEN_RE.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2)


def secret_matches(secret: str, stored_sha256: bytes) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
