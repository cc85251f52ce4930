"""The egress room: releasing a granted version's bytes, ranged and streamed, within budgets.

Three byte budgets cap a pull: the grant's own, the principal's over the service's sliding
window, and the model's over the same window (every principal together). Bytes are debited in
slices *before* they are sent, each budget by one conditional statement (:mod:`.budgets`);
each debit, and each piece of a stream between debits, goes through the one grant check
(:func:`~weightvault.custody.grants.authorize_grant_use`), so a revoked or expired grant, a
revoked token or a disabled principal stops a transfer in flight.

Files are delivered as stored, except for their header, which is re-wrapped for the grantee's
X25519 recipient through crypt's public header functions (made once per grant and file, then
reused, so that a resumed range sees the same bytes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from weightvault.crypt import Identity, X25519Recipient, rewrap_header, unlock_header
from weightvault.custody import _names
from weightvault.custody.alerts import AlertEvent, AlertSink, crossed, outside_hours
from weightvault.custody.audit import AuditTrail
from weightvault.custody.blobs import BlobStore
from weightvault.custody.budgets import spend, window_used
from weightvault.custody.context import RequestContext, Room, Shared
from weightvault.custody.errors import found
from weightvault.custody.fingerprints import Fingerprinter
from weightvault.custody.grants import GrantUse, active_grant, authorize_grant_use
from weightvault.custody.models import load_model
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import (
    Alert,
    Approval,
    DeliveryHeader,
    Egress,
    GrantRequest,
    Principal,
    Token,
    VersionFile,
)
from weightvault.errors import FormatError, PolicyError, WeightvaultError

__all__ = ["ByteRange", "Pull", "Pulls"]

ByteRange = Callable[[int], tuple[int, int]]
"""Given the size of the delivered file, the half-open range ``[start, end)`` to send (the HTTP
layer parses its ``Range`` header into one of these; the whole file when there is none)."""


@dataclass(frozen=True)
class Pull:
    """An authorized pull: which bytes of which file, and the stream that sends them."""

    path: str
    start: int
    end: int
    total: int
    body: Iterator[bytes]

    @property
    def length(self) -> int:
        return self.end - self.start


class Pulls(Room):
    """Grant listings and pulls: authorization, budgets, delivery headers and streaming."""

    def __init__(
        self,
        shared: Shared,
        blobs: BlobStore,
        kek: Identity,
        trail: AuditTrail,
        alerts: AlertSink,
        fingerprints: Fingerprinter | None = None,
    ) -> None:
        super().__init__(shared)
        self._blobs = blobs
        self._kek = kek
        self._trail = trail
        self._alerts = alerts
        self._fingerprints = fingerprints

    def grant_files(self, ctx: RequestContext, grant_id: str) -> dict[str, Any]:
        """What an active grant lets its holder pull: files, sizes as delivered, bytes left."""
        with self._store.session() as session:
            grant = active_grant(session, ctx, grant_id, self._clock())
            files = session.scalars(
                select(VersionFile)
                .where(VersionFile.model == grant.model, VersionFile.version == grant.version)
                .order_by(VersionFile.index)
            ).all()
            files, fingerprint_id = self._fingerprinted(session, grant, list(files))
            listing = []
            for f in files:
                header = self._delivery_header(session, grant, f)
                listing.append(
                    {
                        "index": f.index,
                        "path": f.path,
                        "size": f.size,
                        "sha256": f.sha256,
                        "delivered_size": len(header) + f.body_size,
                    }
                )
            detail: dict[str, Any] = {"grant_id": grant_id, "files": len(listing)}
            if fingerprint_id is not None:
                detail["fingerprint_id"] = fingerprint_id
            self._audit(ctx, "allowed", detail)
        return {
            "grant_id": grant_id,
            "model": grant.model,
            "version": grant.version,
            "bytes_remaining": grant.byte_budget - grant.bytes_used,
            "files": listing,
        }

    def _fingerprinted(
        self, session: Session, grant: GrantRequest, files: list[VersionFile]
    ) -> tuple[list[VersionFile], str | None]:
        """Under a ``fingerprint`` policy, the grant's own marked copies in place of the
        originals (made on first use; see :mod:`weightvault.custody.fingerprints`)."""
        if self._fingerprints is None or not load_model(session, grant.model)[1].fingerprint:
            return files, None
        every = session.scalars(
            select(VersionFile)
            .where(VersionFile.model == grant.model, VersionFile.version == grant.version)
            .order_by(VersionFile.index)
        ).all()
        copies = self._fingerprints.copies(session, grant, list(every))
        delivered = []
        for f in files:
            copy = copies.get(f.index)
            if copy is not None:  # a detached stand-in, never added to the session
                f = VersionFile(
                    model=f.model, version=f.version, index=f.index, path=f.path,
                    size=copy.size, sha256=copy.sha256, blob_key=copy.blob_key,
                    header_size=copy.header_size, body_size=copy.body_size,
                )  # fmt: skip
            delivered.append(f)
        ids = {c.fingerprint_id for c in copies.values()}
        return delivered, ids.pop() if ids else None

    def _delivery_header(self, session: Session, grant: GrantRequest, vfile: VersionFile) -> bytes:
        """The file's header re-wrapped for the grantee (made once, then reused for resumes)."""
        existing = session.get(DeliveryHeader, (grant.id, vfile.index))
        if existing is not None:
            return existing.header
        principal = session.get(Principal, grant.requester)
        if principal is None or principal.recipient is None:
            raise PolicyError("grantee has no X25519 recipient")
        stored = b"".join(self._blobs.read_range(vfile.blob_key, 0, vfile.header_size))
        opened = unlock_header(stored, [self._kek], vfile.path)
        recipient = X25519Recipient.from_string(principal.recipient)
        delivered = rewrap_header(opened.header, opened.dek, [recipient])
        session.add(DeliveryHeader(grant_id=grant.id, file_index=vfile.index, header=delivered))
        session.flush()
        return delivered

    def open_pull(
        self, ctx: RequestContext, grant_id: str, index: int, byte_range: ByteRange | None
    ) -> Pull:
        """Authorize a pull of one file (a byte range of it) and return its stream.

        Steps: (1) active grant of this principal, in its window; (2) the approvals that
        activated it are in the signed audit log (inclusion proofs); (3) the range; (4) the first
        slice debited from the grant, principal and model budgets; (5) audit; then the body
        streams, debiting each further slice before it is sent.
        """
        with self._store.session() as session:
            # (1)
            grant = active_grant(session, ctx, grant_id, self._clock())
            if isinstance(index, bool) or not 0 <= index < _names.MAX_FILES:
                raise FormatError("index: out of range")
            vfile = found(session.get(VersionFile, (grant.model, grant.version, index)), "file")
            (vfile,), fingerprint_id = self._fingerprinted(session, grant, [vfile])
            approvals = list(
                session.scalars(
                    select(Approval).where(
                        Approval.request_id == grant_id, Approval.decision == "approve"
                    )
                )
            )
            header = self._delivery_header(session, grant, vfile)
        # (2)
        if len(approvals) < grant.approvals_required:
            raise PolicyError("grant lacks its approvals")
        self._trail.require_included([(a.log_index, a.log_entry) for a in approvals])
        # (3)
        total = len(header) + vfile.body_size
        start, end = byte_range(total) if byte_range is not None else (0, total)
        # (4)
        first = min(end - start, self._config.debit_slice_bytes)
        self._debit(ctx, grant_id, first, starting=True)
        ctx.detail.update(
            {"grant_id": grant_id, "file": vfile.path, "range": [start, end], "total": total}
        )
        if fingerprint_id is not None:
            ctx.detail["fingerprint_id"] = fingerprint_id
        # (5)
        self._audit(ctx, "allowed")
        body = self._stream(ctx, grant_id, vfile, header, start, end, first)
        return Pull(vfile.path, start, end, total, body)

    def _stream(
        self,
        ctx: RequestContext,
        grant_id: str,
        vfile: VersionFile,
        header: bytes,
        start: int,
        end: int,
        debited: int,
    ) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the delivered file: our header, then the stored body.

        Each piece beyond what is debited is debited first (a slice at a time); a piece already
        paid for still stops at once when the grant, the token or the principal is no longer
        valid (the debit re-checks them otherwise)."""
        length = end - start
        slice_size = self._config.debit_slice_bytes
        sent = 0
        position = start
        try:
            if position < len(header):
                piece = header[position:end]
                sent += len(piece)
                position += len(piece)
                yield piece
            if position < end:
                # The blob is the stored header, then the body; deliver ours, then its body.
                body_start = vfile.header_size + position - len(header)
                for piece in self._blobs.read_range(vfile.blob_key, body_start, end - position):
                    if sent + len(piece) > debited:
                        while sent + len(piece) > debited:
                            more = min(slice_size, length - debited)
                            self._debit(ctx, grant_id, more)
                            debited += more
                    else:
                        self._check_still_active(ctx, grant_id)
                    sent += len(piece)
                    yield piece
        finally:
            if sent != length:
                self._note_incomplete(ctx, sent, length)

    def _check_still_active(self, ctx: RequestContext, grant_id: str) -> None:
        """Per piece of a pull: grant, token and principal in one query (one round trip)."""
        token_valid = (
            select(func.count())
            .select_from(Token)
            .where(Token.id == (ctx.token_id or ""), Token.revoked_at.is_(None))
            .scalar_subquery()
        )
        principal_enabled = (
            select(func.count())
            .select_from(Principal)
            .where(
                Principal.name == (ctx.principal.name if ctx.principal else ""),
                Principal.disabled.is_(False),
            )
            .scalar_subquery()
        )
        query = select(
            GrantRequest.status, GrantRequest.grant_expires_at, token_valid, principal_enabled
        ).where(GrantRequest.id == grant_id)
        with self._store.session(read_only=True) as session:
            row = session.execute(query).one_or_none()
        use = GrantUse(status=None, expires_at=None)
        if row is not None:
            use = GrantUse(
                status=row[0],
                expires_at=row[1],
                token_valid=ctx.token_id is None or bool(row[2]),
                principal_enabled=ctx.principal is None or bool(row[3]),
            )
        authorize_grant_use(use, self._clock(), in_flight=True)

    def _note_incomplete(self, ctx: RequestContext, sent: int, length: int) -> None:
        try:
            ctx.action = "pull.incomplete"
            ctx.responding = True  # what was sent stays sent: the entry stands, in doubt or not
            self._audit(ctx, "stopped", {"sent": sent, "expected": length})
        except WeightvaultError:
            pass

    def _debit(
        self, ctx: RequestContext, grant_id: str, nbytes: int, *, starting: bool = False
    ) -> None:
        """Charge ``nbytes`` to the grant and to the principal's and model's window budgets
        (``starting``: the first debit of a pull request).

        Each budget is spent by one conditional ``UPDATE`` (:mod:`.budgets`), in a savepoint:
        the first one that refuses undoes the others, and its refusal is what the caller sees.
        No row is locked before: replicas debiting the same grant, principal or model never
        spend the same bytes twice, because the database checks each budget on the row it
        raises.
        """
        if nbytes <= 0:
            return
        now = self._clock()
        since = now - dt.timedelta(seconds=self._config.window_s)
        with self._store.session() as session:
            grant = session.get(GrantRequest, grant_id)
            use = self._grant_use_in(session, ctx, grant)
            authorize_grant_use(use, now, in_flight=True)
            assert grant is not None  # refused above otherwise
            _model, policy = load_model(session, grant.model)
            windows = (
                ("principal", grant.requester, self._config.principal_egress_bytes_per_window),
                ("model", grant.model, policy.egress_bytes_per_window),
            )
            first_pull = (
                session.scalar(
                    select(Egress.id).where(Egress.principal == grant.requester).limit(1)
                )
                is None
            )
            debit = spend(session, grant_id, nbytes, now, since, windows)
            refusal: tuple[str, int, int] | None = None
            if debit.refused == "grant":
                fresh = session.execute(
                    select(
                        GrantRequest.status,
                        GrantRequest.grant_expires_at,
                        GrantRequest.bytes_used,
                        GrantRequest.byte_budget,
                    ).where(GrantRequest.id == grant_id)
                ).one_or_none()
                if fresh is None:
                    authorize_grant_use(GrantUse(None, None), now, in_flight=True)
                assert fresh is not None
                # Revoked or expired since it was read: that refusal, not the budget's.
                authorize_grant_use(
                    GrantUse(fresh[0], fresh[1], use.token_valid, use.principal_enabled),
                    now,
                    in_flight=True,
                )
                refusal = ("grant", int(fresh[2]), int(fresh[3]))
            elif debit.refused is not None:
                for kind, subject, budget in windows:
                    if kind == debit.refused:
                        refusal = (kind, window_used(session, kind, subject, since), budget)
            if refusal is not None:
                name, used, budget = refusal
                self._alerts.emit(
                    session,
                    AlertEvent(
                        "budget.exhausted",
                        now,
                        principal=grant.requester,
                        model=grant.model,
                        detail={"budget": name, "used": used, "limit": budget, "asked": nbytes},
                    ),
                )
            else:
                before = debit.window_before
                self._charge(session, grant, nbytes, now, before["principal"], first_pull)
                self._signals(
                    session, grant, debit.grant_used, nbytes, now, starting, before["model"], policy
                )
        if refusal is not None:
            name, used, budget = refusal
            raise PolicyError(
                f"pull refused: the {name} byte budget is exhausted "
                f"({used} of {budget} bytes used, {nbytes} more asked)"
            )

    @staticmethod
    def _grant_use_in(
        session: Session, ctx: RequestContext, grant: GrantRequest | None
    ) -> GrantUse:
        """The grant's state and the caller's, inside the debit's transaction.

        Authentication runs once per request; a long download must not outlive the credential
        that started it (grant revocation alone would leave a stolen token streaming).
        """
        if grant is None:
            return GrantUse(status=None, expires_at=None)
        token_valid = True
        if ctx.token_id is not None:
            token = session.get(Token, ctx.token_id)
            token_valid = token is not None and token.revoked_at is None
        principal_enabled = True
        if ctx.principal is not None:
            principal = session.get(Principal, ctx.principal.name)
            principal_enabled = principal is not None and not principal.disabled
        return GrantUse(grant.status, grant.grant_expires_at, token_valid, principal_enabled)

    def _charge(
        self,
        session: Session,
        grant: GrantRequest,
        nbytes: int,
        now: dt.datetime,
        used: int,
        first_pull: bool,
    ) -> None:
        """Raise the volume and first-time alerts of a debit."""
        if first_pull:
            self._alerts.emit(
                session,
                AlertEvent(
                    "principal.first_pull",
                    now,
                    principal=grant.requester,
                    model=grant.model,
                    detail={"grant_id": grant.id},
                ),
            )
        budget = self._config.principal_egress_bytes_per_window
        threshold = budget * self._config.unusual_volume_fraction
        if used < threshold <= used + nbytes:
            self._alerts.emit(
                session,
                AlertEvent(
                    "volume.unusual",
                    now,
                    principal=grant.requester,
                    model=grant.model,
                    detail={"window_bytes": used + nbytes, "budget": budget},
                ),
            )

    def _signals(
        self,
        session: Session,
        grant: GrantRequest,
        spent: int,
        nbytes: int,
        now: dt.datetime,
        starting: bool,
        model_used: int,
        policy: ModelPolicy,
    ) -> None:
        """Incident signals of a debit: a grant or a model past a fraction of its budget, a pull
        outside working hours (once per grant and hour)."""
        fraction = self._config.budget_alert_fraction
        budgets = (
            ("grant", spent - nbytes, spent, grant.byte_budget),
            ("model", model_used, model_used + nbytes, policy.egress_bytes_per_window),
        )
        for name, before, after, budget in budgets:
            if crossed(before, after, budget, fraction):
                self._alerts.emit(
                    session,
                    AlertEvent(
                        "egress.budget_fraction",
                        now,
                        principal=grant.requester,
                        model=grant.model,
                        detail={
                            "budget": name,
                            "grant_id": grant.id,
                            "used": after,
                            "limit": budget,
                            "fraction": fraction,
                        },
                    ),
                )
        if starting and outside_hours(now, self._config.working_hours_utc):
            recent = session.scalar(
                select(func.count())
                .select_from(Alert)
                .where(
                    Alert.kind == "pull.off_hours",
                    Alert.principal == grant.requester,
                    Alert.time > now - dt.timedelta(hours=1),
                    Alert.detail.contains(grant.id),
                )
            )
            if not recent:
                self._alerts.emit(
                    session,
                    AlertEvent(
                        "pull.off_hours",
                        now,
                        principal=grant.requester,
                        model=grant.model,
                        detail={
                            "grant_id": grant.id,
                            "hour_utc": now.astimezone(dt.UTC).hour,
                            "working_hours_utc": list(self._config.working_hours_utc or ()),
                        },
                    ),
                )
