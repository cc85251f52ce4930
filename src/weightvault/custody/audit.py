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

An append that fails may still have been committed (the database or the connection died during
``COMMIT``): the request was refused, yet its entry may say "allowed". The trail keeps such an
entry "in doubt" (bytes, and a log size it cannot precede) and, as soon as the log can be
written again (the next append or checkpoint), looks it up by leaf hash
(:func:`~weightvault.tlog.find_leaves`); if it is there, a ``audit.void`` entry naming its index
and leaf hash says it never took effect. Readers take a voided entry as not having happened
(:func:`voided_entries`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from weightvault._json import canonical
from weightvault.custody.approvals import format_time
from weightvault.custody.console.ledger import PasskeyLedger
from weightvault.errors import VerificationError, WeightvaultError
from weightvault.tlog import (
    GroupCommitter,
    LogExport,
    NoteSigner,
    TransparencyLog,
    VerifierKey,
    find_leaves,
    leaf_hash,
    verify_checkpoint,
    verify_export,
    verify_inclusion,
)

__all__ = [
    "AUDIT_FORMAT",
    "VOID_ACTION",
    "AuditTrail",
    "AuditUnavailable",
    "AuditVerification",
    "parse_audit_event",
    "verify_audit",
    "voided_entries",
]

AUDIT_FORMAT = "weightvault.dev/custody-audit@v1"
VOID_ACTION = "audit.void"
"""The action of an entry that cancels an earlier one whose commit was in doubt."""
VOID_REASON = (
    "refused: its commit was in doubt; the request was answered 503 and nothing was served"
)
_MAX_BATCH = 512
_MAX_IN_DOUBT = 10_000
_log = logging.getLogger("weightvault.custody")


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
        max_in_doubt: int = _MAX_IN_DOUBT,
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
        self._clock = clock
        self._doubts = _Doubts(max_in_doubt)
        self._size_seen = self._log.size()
        """A size the log has reached (it only grows): an entry appended later lands at or
        after it. Read before each append, raised after each success."""

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

    def append(self, event: dict[str, Any], *, void_in_doubt: bool = True) -> tuple[int, bytes]:
        """Append one event durably; returns ``(index, entry bytes)``.

        Raises :class:`AuditUnavailable` when the log cannot be written. The entry may still
        have been committed: with ``void_in_doubt`` (the caller refuses its request) it is
        voided once the log can be written again; pass ``False`` for an entry that records
        what happened anyway (a stream that stopped), which stands either way.
        """
        document = {"format": AUDIT_FORMAT, "replica": self.replica, **event}
        entry = canonical(document)
        since = self._size_seen  # read first: a concurrent success may raise it meanwhile
        try:
            index = self._committer.append(entry)
        except Exception as exc:
            if void_in_doubt:
                self._doubts.add(_InDoubt(entry, leaf_hash(entry), since, self._now()))
            raise AuditUnavailable(
                "the audit log cannot be written; the request was refused (fail closed)",
            ) from exc
        self._size_seen = max(self._size_seen, index + 1)
        if self._doubts:
            self._settle_quietly()
        self._checkpoint_if_due()
        return index, entry

    # -- commits in doubt ----------------------------------------------------------------------

    @property
    def in_doubt(self) -> int:
        """Entries whose append failed and whose presence in the log is not settled yet."""
        return len(self._doubts)

    def settle_in_doubt(self) -> list[int]:
        """Look up every entry whose commit was in doubt; void each that the log holds.

        Call it after something was written (an append, a checkpoint): every writer takes the
        log's size row lock, so a failed commit has landed by then or never will. Returns the
        indices of the void entries written; one caller at a time (another gets ``[]`` at once).
        An entry is forgotten once settled; when a void cannot be written, it and the rest stay
        in doubt for the next try (:class:`AuditUnavailable`). Voids are the same bytes on every
        try, and one already in the log is not written again.
        """
        if not self._doubts.settling.acquire(blocking=False):
            return []
        try:
            with _or_unavailable("the audit log cannot settle entries in doubt"):
                return self._settle()
        finally:
            self._doubts.settling.release()

    def _settle(self) -> list[int]:
        pending = self._doubts.snapshot()
        if not pending:
            return []
        found = find_leaves(self._log, {d.leaf for d in pending}, min(d.since for d in pending))
        voids: dict[bytes, tuple[int, bytes]] = {}
        for doubt in pending:
            index = found.get(doubt.leaf)
            if index is not None and self._log.entry(index) == doubt.entry:
                voids[doubt.leaf] = (index, self._void_entry(doubt, index))
        written = set()
        if voids:
            first = min(index for index, _ in voids.values()) + 1
            written = set(find_leaves(self._log, {leaf_hash(v) for _, v in voids.values()}, first))
        out = []
        for doubt in pending:
            if doubt.leaf in voids:
                index, void = voids[doubt.leaf]
                if leaf_hash(void) not in written:
                    at = self._committer.append(void)
                    self._size_seen = max(self._size_seen, at + 1)
                    out.append(at)
                    _log.warning(
                        "audit: entry %d was committed although its append failed (the request "
                        "was refused); entry %d voids it",
                        index,
                        at,
                    )
            self._doubts.forget(doubt.leaf)
        return out

    def _void_entry(self, doubt: _InDoubt, index: int) -> bytes:
        """The void of ``doubt`` found at ``index``: the same bytes on every try (its time is
        when the append failed), so a retry can see that it is already written."""
        request_id = json.loads(doubt.entry).get("request_id")
        event = {
            "format": AUDIT_FORMAT,
            "replica": self.replica,
            "action": VOID_ACTION,
            "outcome": "voided",
            "principal": None,
            "request_id": request_id,
            "time": doubt.time,
            "detail": {"index": index, "leaf_hash": doubt.leaf.hex(), "reason": VOID_REASON},
        }
        return canonical(event)

    def _settle_quietly(self) -> list[int]:
        """Settle after a successful append or checkpoint; a failure is retried next time."""
        try:
            return self.settle_in_doubt()
        except WeightvaultError as exc:
            _log.warning("audit: entries in doubt not settled yet: %s", exc.one_line())
            return []

    def _now(self) -> str:
        return format_time(dt.datetime.fromtimestamp(self._clock(), dt.UTC))

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
        """Sign a checkpoint of the current tree now; returns the signed note.

        Then entries in doubt are settled, if any: the log is writable again, and signing took
        the writer lock, so every append that failed before has landed or never will. When that
        writes voids, a second checkpoint covers them."""
        note = self._sign_now()
        if self._doubts and self._settle_quietly():
            note = self._sign_now()
        return note

    def _sign_now(self) -> bytes:
        with self._checkpoint_lock, _or_unavailable("the audit log cannot sign a checkpoint"):
            return self._sign_locked()

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


@contextlib.contextmanager
def _or_unavailable(message: str) -> Iterator[None]:
    """A failure of the log's own (not already one of ours) becomes :class:`AuditUnavailable`."""
    try:
        yield
    except WeightvaultError:
        raise
    except Exception as exc:
        raise AuditUnavailable(message) from exc


@dataclass(frozen=True)
class _InDoubt:
    """An entry whose append failed: it may or may not be in the log."""

    entry: bytes
    leaf: bytes
    since: int
    """A size the log had before the append began: if the entry landed, it is at or after."""
    time: str
    """When the append failed (the void's time)."""


class _Doubts:
    """The entries in doubt, oldest first, at most ``limit`` (thread-safe).

    Past the limit the oldest is forgotten and an error is logged with its leaf hash, so an
    operator can look it up and void it by hand."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_in_doubt must be at least 1")
        self._limit = limit
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, _InDoubt] = OrderedDict()
        self.settling = threading.Lock()
        """Held by the one caller settling them."""
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, doubt: _InDoubt) -> None:
        with self._lock:
            self._items[doubt.leaf] = doubt
            if len(self._items) <= self._limit:
                return
            _leaf, oldest = self._items.popitem(last=False)
            self.dropped += 1
        _log.error(
            "audit: more than %d entries in doubt; forgot the oldest (leaf hash %s, at or after "
            "index %d): if the log holds it, it is not voided (%d forgotten so far)",
            self._limit,
            oldest.leaf.hex(),
            oldest.since,
            self.dropped,
        )

    def snapshot(self) -> list[_InDoubt]:
        with self._lock:
            return list(self._items.values())

    def forget(self, leaf: bytes) -> None:
        with self._lock:
            self._items.pop(leaf, None)


@dataclass(frozen=True)
class AuditVerification:
    """An exported audit log that verified, with a tally of what it records.

    A voided entry (see :func:`voided_entries`) is not counted: it never took effect."""

    size: int
    origin: str
    counts: dict[str, int]
    denied: int
    passkey_approvals: int = 0
    """Approvals signed with a passkey whose assertion was checked against the logged key."""
    voided: int = 0
    """Entries an ``audit.void`` entry cancelled (their commit was in doubt)."""


_VOID_NEEDLE = b'"action":"audit.void"'


def parse_audit_event(index: int, raw: bytes) -> dict[str, Any]:
    """Log entry ``index`` as a custody audit event (a JSON object of :data:`AUDIT_FORMAT`).

    Why one function: the offline verifier here and incident evidence read the same entries,
    and a log that holds anything else must be refused the same way by both. A void entry must
    also be well formed: canonical (so a byte search finds every one), naming an earlier index
    and a leaf hash; :func:`voided_entries` checks that this index holds that leaf.
    """
    try:
        event = json.loads(raw)
    except ValueError as exc:
        raise VerificationError(f"audit entry {index}: not a custody audit event") from exc
    if not isinstance(event, dict) or event.get("format") != AUDIT_FORMAT:
        raise VerificationError(f"audit entry {index}: not a custody audit event")
    if event.get("action") == VOID_ACTION:
        detail = event.get("detail")
        target = detail.get("index") if isinstance(detail, dict) else None
        leaf = detail.get("leaf_hash") if isinstance(detail, dict) else None
        if (
            _VOID_NEEDLE not in raw
            or isinstance(target, bool)
            or not isinstance(target, int)
            or not 0 <= target < index
            or not isinstance(leaf, str)
            or len(leaf) != 64
            or leaf.strip("0123456789abcdef")
        ):
            raise VerificationError(
                f"audit entry {index}: a void entry must name an earlier entry and its leaf hash"
            )
    return event


def voided_entries(
    entries: Sequence[bytes], voids: Sequence[tuple[int, dict[str, Any]]] | None = None
) -> dict[int, int]:
    """Index of each voided entry -> index of the ``audit.void`` entry that voids it.

    ``voids`` are the void entries, parsed, when the caller has them (else they are found by
    a byte search). Raises :class:`VerificationError` when a void names an index that does not
    hold its leaf hash, another void, or an entry voided already: a void can only cancel an
    entry that is in the log, once.
    """
    if voids is None:
        voids = [
            (index, event)
            for index, raw in enumerate(entries)
            if _VOID_NEEDLE in raw
            and (event := parse_audit_event(index, raw)).get("action") == VOID_ACTION
        ]
    out: dict[int, int] = {}
    sources = {index for index, _ in voids}
    for index, event in voids:
        target = int(event["detail"]["index"])
        leaf = leaf_hash(entries[target]).hex()
        if not hmac.compare_digest(leaf, str(event["detail"]["leaf_hash"])):
            raise VerificationError(
                f"audit entry {index}: voids entry {target}, which does not hold that leaf hash"
            )
        if target in sources or target in out:
            raise VerificationError(
                f"audit entry {index}: voids entry {target}, a void or an entry voided already"
            )
        out[target] = index
    return out


def verify_audit(
    export: bytes, log_key_text: str, *, trusted_checkpoint: bytes | None = None
) -> AuditVerification:
    """Verify an exported audit log offline (see :func:`weightvault.tlog.verify_export`),
    then parse every entry as an audit event and tally actions and denials (voided entries,
    checked with :func:`voided_entries`, are left out of the tally and counted apart)."""
    key = VerifierKey.from_text(log_key_text)
    result = verify_export(export, key, trusted_checkpoint=trusted_checkpoint)
    parsed = LogExport.from_json(export)
    entries = parsed.entries[: result.size]
    counts: dict[str, int] = {}
    denied = 0
    passkeys = PasskeyLedger()
    voids = []
    for index, entry in enumerate(entries):
        doc = parse_audit_event(index, entry)
        action = str(doc.get("action", "?"))
        counts[action] = counts.get(action, 0) + 1
        if doc.get("outcome") == "denied":
            denied += 1
        passkeys.check(index, doc)
        if action == VOID_ACTION:
            voids.append((index, doc))
    voided = voided_entries(entries, voids)
    for target in voided:  # never took effect: out of the tally
        doc = parse_audit_event(target, entries[target])
        counts[str(doc.get("action", "?"))] -= 1
        denied -= doc.get("outcome") == "denied"
    counts = {action: count for action, count in counts.items() if count}
    return AuditVerification(
        size=result.size,
        origin=result.origin,
        counts=counts,
        denied=denied,
        passkey_approvals=passkeys.checked,
        voided=len(voided),
    )
