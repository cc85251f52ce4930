"""The audit trail: every request's outcome appended to the transparency log before the response.

Entries are canonical JSON (``weightvault.dev/custody-audit@v1``). Secrets never enter the log:
tokens (and anything else sensitive) are HMAC-SHA256'd with the service's audit key, so the log can
be handed to auditors while an operator can still answer "was this token used?"
(:meth:`AuditTrail.hmac_secret`).

Appends go through the transparency log's :class:`~weightvault.tlog.GroupCommitter`: the first
request to arrive commits whatever is queued in one durable transaction (group commit), so 50
concurrent requests cost a handful of fsyncs, not 50. A caller returns once its entry is durable,
with its index; if the log cannot be written the caller gets :class:`AuditUnavailable` and must
fail the request (fail closed).

Checkpoints are signed with the service's log key (a C2SP signed note) after appends when more
than ``checkpoint_every`` entries or ``checkpoint_interval_s`` seconds have passed, and on demand
(before a pull, so that approvals can be proven to be in a signed tree).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weightvault._json import canonical
from weightvault.custody.console.ledger import PasskeyLedger
from weightvault.errors import VerificationError, WeightvaultError
from weightvault.tlog import (
    GroupCommitter,
    LogExport,
    NoteSigner,
    TransparencyLog,
    VerifierKey,
    leaf_hash,
    verify_checkpoint,
    verify_export,
    verify_inclusion,
)

__all__ = [
    "AUDIT_FORMAT",
    "AuditTrail",
    "AuditUnavailable",
    "AuditVerification",
    "parse_audit_event",
    "verify_audit",
]

AUDIT_FORMAT = "weightvault.dev/custody-audit@v1"
_MAX_BATCH = 512


class AuditUnavailable(WeightvaultError):
    """The audit log could not be written: the request must fail."""

    exit_code = 1


class AuditTrail:
    """Appends audit entries to a :class:`~weightvault.tlog.TransparencyLog` (thread-safe)."""

    def __init__(
        self,
        log_location: str,
        origin: str,
        signer: NoteSigner,
        hmac_key: bytes,
        *,
        replica: str = "",
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._origin = origin
        self._signer = signer
        self._hmac_key = hmac_key
        self.replica = replica
        self._log = self.open_or_create(log_location, origin)
        self._committer = GroupCommitter(self._log, max_batch=_MAX_BATCH)
        self._schedule = _CheckpointSchedule(checkpoint_every, checkpoint_interval_s, clock)
        self._checkpoint_lock = threading.Lock()
        """Held while a checkpoint is signed (one at a time; appends go on meanwhile)."""

    # -- setup ---------------------------------------------------------------------------------

    @staticmethod
    def open_or_create(location: str, origin: str) -> TransparencyLog:
        """Open the log at ``location``, creating it (empty) the first time."""
        try:
            return TransparencyLog.open(location)
        except WeightvaultError:
            try:
                return TransparencyLog.create(location, origin)
            except WeightvaultError:
                return TransparencyLog.open(location)  # another replica created it meanwhile
            except Exception:
                return TransparencyLog.open(location)

    @property
    def verifier_key(self) -> VerifierKey:
        return self._signer.verifier_key

    def hmac_secret(self, secret: str) -> str:
        """``hmac-sha256:<hex>`` of a secret under the audit key."""
        digest = hmac.new(self._hmac_key, secret.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest}"

    # -- appends -------------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> tuple[int, bytes]:
        """Append one event durably; returns ``(index, entry bytes)``.

        Raises :class:`AuditUnavailable` when the log cannot be written.
        """
        document = {"format": AUDIT_FORMAT, "replica": self.replica, **event}
        entry = canonical(document)
        try:
            index = self._committer.append(entry)
        except Exception as exc:
            raise AuditUnavailable(
                "the audit log cannot be written; the request was refused (fail closed)",
            ) from exc
        self._checkpoint_if_due()
        return index, entry

    def _checkpoint_if_due(self) -> None:
        """Sign a checkpoint once enough entries or time have passed (one caller signs; the
        others go on). A failed signature is retried after the next append."""
        if self._schedule.appended() and self._checkpoint_lock.acquire(blocking=False):
            try:
                self._sign_locked()
            except Exception:  # noqa: S110 - a failed checkpoint is retried on the next append
                pass
            finally:
                self._checkpoint_lock.release()

    def _sign_locked(self) -> bytes:
        """Sign a checkpoint of the current tree (``_checkpoint_lock`` held)."""
        note = self._log.sign_checkpoint(self._signer)
        self._schedule.signed()
        return note

    # -- reads ---------------------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Sign a checkpoint of the current tree now; returns the signed note."""
        with self._checkpoint_lock:
            try:
                return self._sign_locked()
            except WeightvaultError:
                raise
            except Exception as exc:
                raise AuditUnavailable("the audit log cannot sign a checkpoint") from exc

    def require_included(self, items: list[tuple[int, bytes]]) -> None:
        """Prove that each ``(index, entry)`` is in a tree signed by the log key.

        Signs a fresh checkpoint if the latest one does not cover every index, then checks each
        inclusion proof against the checkpoint's signed root. Raises :class:`VerificationError`.
        """
        with self._checkpoint_lock:
            note = self._log.latest_checkpoint()
            needed = max((index for index, _ in items), default=-1) + 1
            checkpoint = None
            if note is not None:
                checkpoint = verify_checkpoint(note, self.verifier_key, origin=self._origin)
            if checkpoint is None or checkpoint.checkpoint.size < needed:
                note = self._sign_locked()
                checkpoint = verify_checkpoint(note, self.verifier_key, origin=self._origin)
        size = checkpoint.checkpoint.size
        for index, entry in items:
            proof = self._log.inclusion_proof(index, size)
            try:
                verify_inclusion(leaf_hash(entry), index, size, proof, checkpoint.checkpoint.root)
            except VerificationError as exc:
                raise VerificationError(
                    f"audit entry {index} is not in the signed log",
                    hint="the audit log was altered; run 'weightvault audit verify'",
                ) from exc

    def export(self) -> bytes:
        """A signed checkpoint of everything so far, then the log export (JSON bytes)."""
        self.checkpoint()
        return self._log.export().to_json()

    def latest_checkpoint(self) -> bytes | None:
        return self._log.latest_checkpoint()

    def recent(self, count: int) -> tuple[int, list[tuple[int, bytes, bool]]]:
        """The last ``count`` entries, newest first, each with whether its inclusion proof
        verifies against the latest signed checkpoint; and that checkpoint's tree size (0 when
        none is signed yet). An entry after the checkpoint is not proven yet."""
        note = self._log.latest_checkpoint()
        size = 0
        root = b""
        if note is not None:
            checked = verify_checkpoint(note, self.verifier_key, origin=self._origin)
            size, root = checked.checkpoint.size, checked.checkpoint.root
        total = self._log.size()
        out = []
        for index in range(total - 1, max(total - count, 0) - 1, -1):
            entry = self._log.entry(index)
            proven = False
            if index < size:
                try:
                    proof = self._log.inclusion_proof(index, size)
                    verify_inclusion(leaf_hash(entry), index, size, proof, root)
                    proven = True
                except VerificationError:
                    proven = False
            out.append((index, entry, proven))
        return size, out

    def close(self) -> None:
        self._log.close()


class _CheckpointSchedule:
    """When the next checkpoint is due: ``every`` entries or ``interval_s`` seconds after the
    last one (thread-safe)."""

    def __init__(self, every: int, interval_s: float, clock: Callable[[], float]) -> None:
        self._limits = (every, interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._appended = 0
        self._signed_at = clock()

    def appended(self) -> bool:
        """Count one appended entry; whether a checkpoint is due now."""
        every, interval_s = self._limits
        with self._lock:
            self._appended += 1
            return self._appended >= every or self._clock() - self._signed_at >= interval_s

    def signed(self) -> None:
        """A checkpoint was signed: start counting again."""
        with self._lock:
            self._appended = 0
            self._signed_at = self._clock()


@dataclass(frozen=True)
class AuditVerification:
    """An exported audit log that verified, with a tally of what it records."""

    size: int
    origin: str
    counts: dict[str, int]
    denied: int
    passkey_approvals: int = 0
    """Approvals signed with a passkey whose assertion was checked against the logged key."""


def parse_audit_event(index: int, raw: bytes) -> dict[str, Any]:
    """Log entry ``index`` as a custody audit event (a JSON object of :data:`AUDIT_FORMAT`).

    Why one function: the offline verifier here and incident evidence read the same entries,
    and a log that holds anything else must be refused the same way by both.
    """
    try:
        event = json.loads(raw)
    except ValueError as exc:
        raise VerificationError(f"audit entry {index}: not a custody audit event") from exc
    if not isinstance(event, dict) or event.get("format") != AUDIT_FORMAT:
        raise VerificationError(f"audit entry {index}: not a custody audit event")
    return event


def verify_audit(
    export: bytes, log_key_text: str, *, trusted_checkpoint: bytes | None = None
) -> AuditVerification:
    """Verify an exported audit log offline (see :func:`weightvault.tlog.verify_export`),
    then parse every entry as an audit event and tally actions and denials."""
    key = VerifierKey.from_text(log_key_text)
    result = verify_export(export, key, trusted_checkpoint=trusted_checkpoint)
    parsed = LogExport.from_json(export)
    counts: dict[str, int] = {}
    denied = 0
    passkeys = PasskeyLedger()
    for index, entry in enumerate(parsed.entries[: result.size]):
        doc = parse_audit_event(index, entry)
        action = str(doc.get("action", "?"))
        counts[action] = counts.get(action, 0) + 1
        if doc.get("outcome") == "denied":
            denied += 1
        passkeys.check(index, doc)
    return AuditVerification(
        size=result.size,
        origin=result.origin,
        counts=counts,
        denied=denied,
        passkey_approvals=passkeys.checked,
    )
