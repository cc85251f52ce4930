"""Break-glass: split the service KEK into Shamir shares (k of n) and recover it, authenticated.

Shamir's scheme runs independently on every byte of the secret over GF(2^8) with the AES
polynomial x^8 + x^4 + x^3 + x + 1: byte b gets a random polynomial of degree k-1 whose constant
term is b, share i holds its value at x = i (1..n), and k shares give b back by Lagrange
interpolation at 0. Fewer than k shares reveal nothing about b, but they still *combine* to some
value, so every share carries a commitment to the secret (SHA-256 over a domain tag, the split id
and the secret) and :func:`recover` refuses a result that does not match it.

Use this for a root secret that officers keep offline, never as the everyday two-person rule: the
secret is whole again on the machine that recovers it.

Share text: ``wvshare1:<split-id hex>:<k>:<n>:<x>:<share hex>:<commitment hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from weightvault.errors import FormatError, UsageError, VerificationError

__all__ = ["Share", "gf_div", "gf_mul", "recover", "split"]

_PREFIX = "wvshare1"
_COMMIT_TAG = b"weightvault breakglass commitment v1\x00"
_SHARE_RE = re.compile(
    r"wvshare1:([0-9a-f]{16}):([0-9]{1,3}):([0-9]{1,3}):([0-9]{1,3}):([0-9a-f]{2,512}):([0-9a-f]{64})"
)

# exp/log tables for GF(2^8) with generator 3 (x + 1), reduction polynomial 0x11b.
_EXP = [0] * 510
_LOG = [0] * 256
_value = 1
for _i in range(255):
    _EXP[_i] = _value
    _LOG[_value] = _i
    # multiply by 3: v * 2 (xtime) XOR v
    _doubled = _value << 1
    if _doubled & 0x100:
        _doubled ^= 0x11B
    _value = _doubled ^ _value
for _i in range(255, 510):
    _EXP[_i] = _EXP[_i - 255]


def gf_mul(a: int, b: int) -> int:
    """Product in GF(2^8)."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_div(a: int, b: int) -> int:
    """Quotient in GF(2^8); ``b`` must be non-zero."""
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] + 255 - _LOG[b]]


@dataclass(frozen=True)
class Share:
    """One officer's share."""

    split_id: bytes
    threshold: int
    count: int
    x: int
    data: bytes
    commitment: bytes

    def to_text(self) -> str:
        return (
            f"{_PREFIX}:{self.split_id.hex()}:{self.threshold}:{self.count}:{self.x}:"
            f"{self.data.hex()}:{self.commitment.hex()}"
        )

    @classmethod
    def from_text(cls, text: str) -> Share:
        match = _SHARE_RE.fullmatch(text.strip())
        if match is None:
            raise FormatError("share: not a weightvault share (wvshare1:...)")
        split_id, k, n, x, data, commitment = match.groups()
        share = cls(
            split_id=bytes.fromhex(split_id),
            threshold=int(k),
            count=int(n),
            x=int(x),
            data=bytes.fromhex(data),
            commitment=bytes.fromhex(commitment),
        )
        if share.to_text() != text.strip():
            raise FormatError("share: not in canonical form")
        if not 2 <= share.threshold <= share.count <= 255 or not 1 <= share.x <= share.count:
            raise FormatError("share: threshold, count or index out of range")
        return share


def _commit(split_id: bytes, secret: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_TAG + split_id + secret).digest()


def split(
    secret: bytes,
    threshold: int,
    count: int,
    *,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
) -> list[Share]:
    """Split ``secret`` into ``count`` shares, any ``threshold`` of which recover it."""
    if not 2 <= threshold <= count <= 255:
        raise UsageError("shares: need 2 <= threshold <= count <= 255")
    if not 16 <= len(secret) <= 256:
        raise UsageError("shares: the secret must be 16 to 256 bytes")
    split_id = randbytes(8)
    commitment = _commit(split_id, secret)
    # coefficients[j][i]: coefficient of x^(j+1) for byte i (the constant term is the secret).
    coefficients = [randbytes(len(secret)) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        out = bytearray(len(secret))
        for i, byte in enumerate(secret):
            # Horner: ((c_{k-1} x + c_{k-2}) x + ...) x + secret
            acc = 0
            for j in range(threshold - 2, -1, -1):
                acc = gf_mul(acc, x) ^ coefficients[j][i]
            out[i] = gf_mul(acc, x) ^ byte
        shares.append(Share(split_id, threshold, count, x, bytes(out), commitment))
    return shares


def recover(shares: Sequence[Share]) -> bytes:
    """Combine shares and return the secret, or raise if they do not authenticate.

    Refused: shares of different splits, the same share twice, fewer than the threshold, and any
    combination whose result does not match the commitment (a wrong or altered share).
    """
    if not shares:
        raise UsageError("recover: no shares given")
    first = shares[0]
    for share in shares:
        if (share.split_id, share.threshold, share.count, len(share.data)) != (
            first.split_id,
            first.threshold,
            first.count,
            len(first.data),
        ) or not hmac.compare_digest(share.commitment, first.commitment):
            raise VerificationError("recover: the shares come from different splits")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise UsageError("recover: the same share was given twice")
    if len(shares) < first.threshold:
        raise UsageError(
            f"recover: {len(shares)} shares given, {first.threshold} needed",
        )
    chosen = shares[: first.threshold]
    # Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
    weights = []
    for j, share_j in enumerate(chosen):
        weight = 1
        for m, share_m in enumerate(chosen):
            if m != j:
                weight = gf_mul(weight, gf_div(share_m.x, share_m.x ^ share_j.x))
        weights.append(weight)
    secret = bytearray(len(first.data))
    for weight, share in zip(weights, chosen, strict=True):
        for i, byte in enumerate(share.data):
            secret[i] ^= gf_mul(weight, byte)
    result = bytes(secret)
    if not hmac.compare_digest(_commit(first.split_id, result), first.commitment):
        raise VerificationError(
            "recover: the shares do not reconstruct the committed key",
            hint="one of the shares is wrong or altered",
        )
    return result
