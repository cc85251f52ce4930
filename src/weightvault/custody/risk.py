"""The risk register: foreseeable-misuse entries per model, kept in custody, every change logged.

An entry names a hazard, its likelihood and severity (fixed scales, so registers compare), the
mitigations, an owner, and evidence: digests of attestations attached to the model's versions
(``weightvault gate attach``), so a claim like "uplift evaluated below threshold" points at the
signed result that says so.

Entries change as the assessment does: an update replaces fields (``risk.update``), a close
records why the risk no longer applies (``risk.close``; a closed entry stays in the register,
marked closed, and takes no further changes). Each of ``risk.add``, ``risk.update`` and
``risk.close`` is an entry in the transparency log holding the whole entry as it stands after
the change, so the register can be rebuilt from the verified log alone
(:func:`register_from_events`: what the incident report does) and a change nobody logged
cannot exist. The register exports as JSON or Markdown, and travels with the incident report
and the posture report.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from weightvault.custody import _names
from weightvault.custody.approvals import format_time
from weightvault.custody.context import ROLES, RequestContext, Room, require_role
from weightvault.custody.errors import NotFoundError
from weightvault.custody.gates import VersionAttestation
from weightvault.custody.models import load_model
from weightvault.custody.store import Base, _UtcDateTime
from weightvault.errors import FormatError, PolicyError

__all__ = [
    "LIKELIHOODS",
    "RISK_ACTIONS",
    "SEVERITIES",
    "RiskEntry",
    "RiskRegister",
    "entries_of",
    "parse_entry",
    "register_from_events",
    "register_markdown",
    "render_register",
]

LIKELIHOODS = ("rare", "unlikely", "possible", "likely", "almost-certain")
SEVERITIES = ("negligible", "minor", "moderate", "major", "severe")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ID_RE = re.compile(r"[0-9a-f]{32}")
_FIELDS = {"hazard", "likelihood", "severity", "mitigations", "owner", "evidence"}
RISK_ACTIONS = ("risk.add", "risk.update", "risk.close")
"""The audit actions of register changes; each entry's ``detail.risk`` is the whole entry."""
_MAX_TEXT = 2000
_MAX_ITEMS = 32


class RiskEntry(Base):
    """One foreseeable-misuse entry of a model's risk register."""

    __tablename__ = "risk_entries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    hazard: Mapped[str] = mapped_column(Text)
    likelihood: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    mitigations: Mapped[str] = mapped_column(Text)
    """JSON list of strings."""
    owner: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[str] = mapped_column(Text)
    """JSON list of attestation digests."""
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    log_index: Mapped[int] = mapped_column(Integer)
    """The log entry of the latest change (add, update or close)."""
    status: Mapped[str] = mapped_column(String(16), default="open")
    """``open`` or ``closed``."""
    updated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    close_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise FormatError(f"{where}: expected text of 1 to {_MAX_TEXT} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise FormatError(f"{where}: control characters are not allowed")
    return value.strip()


def _texts(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise FormatError(f"{where}: expected a list of at most {_MAX_ITEMS}")
    return [_text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def parse_entry(doc: object, *, partial: bool = False) -> dict[str, Any]:
    """A risk entry as given (strict: unknown fields, scales and digests are checked);
    ``partial``: the fields of an update, any subset but not none."""
    if not isinstance(doc, dict):
        raise FormatError("risk entry: expected an object")
    extra = set(doc) - _FIELDS
    if extra:
        raise FormatError(f"risk entry: unknown field {sorted(extra)[0]}")
    if partial and not doc:
        raise FormatError("risk entry: name at least one field to change")
    if not partial:
        for name in ("hazard", "likelihood", "severity", "owner"):
            if name not in doc:
                raise FormatError(f"risk entry.{name}: missing")
    if "likelihood" in doc and doc["likelihood"] not in LIKELIHOODS:
        raise FormatError(f"risk entry.likelihood: expected one of {', '.join(LIKELIHOODS)}")
    if "severity" in doc and doc["severity"] not in SEVERITIES:
        raise FormatError(f"risk entry.severity: expected one of {', '.join(SEVERITIES)}")
    out: dict[str, Any] = {}
    if "hazard" in doc:
        out["hazard"] = _text(doc["hazard"], "risk entry.hazard")
    for name in ("likelihood", "severity"):
        if name in doc:
            out[name] = doc[name]
    if "mitigations" in doc or not partial:
        out["mitigations"] = _texts(doc.get("mitigations", []), "risk entry.mitigations")
    if "owner" in doc:
        out["owner"] = _names.check_principal_name(doc["owner"], "risk entry.owner")
    if "evidence" in doc or not partial:
        evidence = _texts(doc.get("evidence", []), "risk entry.evidence")
        for index, digest in enumerate(evidence):
            if not _DIGEST_RE.fullmatch(digest):
                raise FormatError(f"risk entry.evidence[{index}]: expected sha256:<64 hex digits>")
        out["evidence"] = evidence
    return out


def _view(row: RiskEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": row.model,
        "hazard": row.hazard,
        "likelihood": row.likelihood,
        "severity": row.severity,
        "mitigations": json.loads(row.mitigations),
        "owner": row.owner,
        "evidence": json.loads(row.evidence),
        "status": row.status or "open",
        "created_by": row.created_by,
        "created_at": format_time(row.created_at),
        "updated_by": row.updated_by,
        "updated_at": format_time(row.updated_at) if row.updated_at else None,
        "close_reason": row.close_reason,
        "log_index": row.log_index,
    }


def _logged(view: dict[str, Any]) -> dict[str, Any]:
    """The entry as its log entry holds it (everything but the index of that very entry)."""
    return {k: v for k, v in view.items() if k != "log_index"}


class RiskRegister(Room):
    """Adding, changing, closing, listing and exporting risk entries."""

    def _writer(self, ctx: RequestContext, session: Session, model_name: str) -> str:
        """Who may change the model's register: its owner, an admin or an auditor."""
        principal = require_role(ctx, "owner", "admin", "auditor")
        model, _policy = load_model(session, model_name, lock=True)
        if principal.name != model.owner and not principal.role_set & {"admin", "auditor"}:
            raise PolicyError("only the model's owner, an admin or an auditor changes its risks")
        return principal.name

    @staticmethod
    def _check_evidence(session: Session, model_name: str, evidence: list[str]) -> None:
        for digest in evidence:
            found = session.scalars(
                select(VersionAttestation.digest).where(
                    VersionAttestation.model == model_name, VersionAttestation.digest == digest
                )
            ).first()
            if found is None:
                raise PolicyError(
                    f"evidence {digest}: no such attestation on {model_name!r}",
                    hint="attach it first (weightvault gate attach)",
                )

    def add(self, ctx: RequestContext, model_name: str, doc: object) -> dict[str, Any]:
        """Add an entry (the model's owner, an admin or an auditor); every evidence digest must
        name an attestation attached to one of the model's versions."""
        require_role(ctx, "owner", "admin", "auditor")
        _names.check_model_name(model_name)
        ctx.detail.update(model=model_name)
        entry = parse_entry(doc)
        with self._store.session() as session:
            who = self._writer(ctx, session, model_name)
            self._check_evidence(session, model_name, entry["evidence"])
            row = RiskEntry(
                id=secrets.token_hex(16),
                model=model_name,
                hazard=entry["hazard"],
                likelihood=entry["likelihood"],
                severity=entry["severity"],
                mitigations=json.dumps(entry["mitigations"]),
                owner=entry["owner"],
                evidence=json.dumps(entry["evidence"]),
                created_by=who,
                created_at=self._clock(),
                log_index=-1,
                status="open",
            )
            index, _entry = self._audit(ctx, "allowed", {"risk": _logged(_view(row))})
            row.log_index = index
            session.add(row)
            session.flush()
            return _view(row)

    def _open_row(self, session: Session, model_name: str, risk_id: str) -> RiskEntry:
        if not _ID_RE.fullmatch(risk_id):
            raise FormatError("risk id: expected 32 hex digits")
        row = session.get(RiskEntry, risk_id)
        if row is None or row.model != model_name:
            raise NotFoundError(f"risk {risk_id} not found on {model_name!r}")
        if row.status == "closed":
            raise PolicyError(
                f"risk {risk_id} is closed ({row.close_reason}); closed entries do not change",
                hint="add a new entry instead",
            )
        return row

    def update(
        self, ctx: RequestContext, model_name: str, risk_id: str, changes: object
    ) -> dict[str, Any]:
        """Replace the given fields of an open entry; logged as ``risk.update`` with the
        fields changed and the whole entry after the change."""
        ctx.detail.update(model=model_name, risk_id=risk_id)  # a refusal names the target too
        require_role(ctx, "owner", "admin", "auditor")
        _names.check_model_name(model_name)
        fields = parse_entry(changes, partial=True)
        with self._store.session() as session:
            who = self._writer(ctx, session, model_name)
            row = self._open_row(session, model_name, risk_id)
            if "evidence" in fields:
                self._check_evidence(session, model_name, fields["evidence"])
            for name, value in fields.items():
                setattr(row, name, json.dumps(value) if isinstance(value, list) else value)
            row.updated_by, row.updated_at = who, self._clock()
            index, _entry = self._audit(
                ctx, "allowed", {"changed": sorted(fields), "risk": _logged(_view(row))}
            )
            row.log_index = index
            session.flush()
            return _view(row)

    def close(
        self, ctx: RequestContext, model_name: str, risk_id: str, reason: str
    ) -> dict[str, Any]:
        """Close an open entry, saying why (10 to 2000 characters); logged as ``risk.close``.
        The entry stays in the register, marked closed."""
        ctx.detail.update(model=model_name, risk_id=risk_id)  # a refusal names the target too
        require_role(ctx, "owner", "admin", "auditor")
        _names.check_model_name(model_name)
        reason = _names.check_justification(reason, "reason")
        with self._store.session() as session:
            who = self._writer(ctx, session, model_name)
            row = self._open_row(session, model_name, risk_id)
            row.status, row.close_reason = "closed", reason
            row.updated_by, row.updated_at = who, self._clock()
            index, _entry = self._audit(ctx, "allowed", {"risk": _logged(_view(row))})
            row.log_index = index
            session.flush()
            return _view(row)

    def list(self, ctx: RequestContext, model_name: str) -> list[dict[str, Any]]:
        require_role(ctx, *ROLES)
        _names.check_model_name(model_name)
        with self._store.session(read_only=True) as session:
            load_model(session, model_name)
            out = entries_of(session, model_name)
        self._audit(ctx, "allowed", {"model": model_name, "count": len(out)})
        return out


def entries_of(session: Session, model_name: str) -> list[dict[str, Any]]:
    """The model's register as stored (oldest first), for readers with the database at hand
    (the posture report)."""
    rows = session.scalars(
        select(RiskEntry).where(RiskEntry.model == model_name).order_by(RiskEntry.created_at)
    )
    return [_view(r) for r in rows]


def register_from_events(
    events: Iterable[tuple[int, dict[str, Any]]], model_name: str
) -> list[dict[str, Any]]:
    """The model's register rebuilt from audit events ``(log index, event)`` in log order:
    each allowed ``risk.*`` entry holds the whole entry after its change, so the last one of
    each id is the entry as it stands (with ``log_index`` the index of that change)."""
    latest: dict[str, dict[str, Any]] = {}
    for index, event in events:
        if event.get("action") not in RISK_ACTIONS or event.get("outcome") != "allowed":
            continue
        detail = event.get("detail")
        if not isinstance(detail, dict):
            continue
        risk = detail.get("risk")
        if not isinstance(risk, dict) or risk.get("model", detail.get("model")) != model_name:
            continue
        if not isinstance(risk.get("id"), str):
            continue
        first = latest.get(risk["id"], {})
        latest[risk["id"]] = {
            "status": "open",
            **risk,
            "model": model_name,
            "created_by": risk.get("created_by", first.get("created_by", event.get("principal"))),
            "created_at": risk.get("created_at", first.get("created_at", event.get("time"))),
            "log_index": index,
        }
    return list(latest.values())


def _cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def register_markdown(entries: list[dict[str, Any]]) -> list[str]:
    """The register as Markdown table lines (shared by the export and the reports)."""
    lines = [
        "| hazard | likelihood | severity | mitigations | owner | evidence | status | log |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        mitigations = "; ".join(_cell(m) for m in e["mitigations"]) or "none"
        evidence = ", ".join(f"`{d}`" for d in e["evidence"]) or "none"
        status = e.get("status", "open")
        if status == "closed" and e.get("close_reason"):
            status = f"closed: {_cell(e['close_reason'])}"
        lines.append(
            f"| {_cell(e['hazard'])} | {e['likelihood']} | {e['severity']} | {mitigations} | "
            f"{_cell(e['owner'])} | {evidence} | {status} | {e['log_index']} |"
        )
    return lines


def render_register(model_name: str, entries: list[dict[str, Any]], fmt: str) -> bytes:
    """The register as JSON (``json``) or a Markdown table (``md``)."""
    if fmt == "json":
        document = {"model": model_name, "risks": entries}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if fmt != "md":
        raise FormatError("format: expected json or md")
    lines = [f"# Risk register: {model_name}", "", *register_markdown(entries)]
    return ("\n".join(lines) + "\n").encode("utf-8")
