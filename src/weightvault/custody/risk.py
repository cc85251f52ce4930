"""The risk register: foreseeable-misuse entries per model, kept in custody, every change logged.

An entry names a hazard, its likelihood and severity (fixed scales, so registers compare), the
mitigations, an owner, and evidence: digests of attestations attached to the model's versions
(``weightvault gate attach``), so a claim like "uplift evaluated below threshold" points at the
signed result that says so. Adding an entry is a ``risk.add`` entry in the transparency log
holding the whole entry; the register exports as JSON or Markdown (with the incident report and
the posture report).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from weightvault.custody import _names
from weightvault.custody.approvals import format_time
from weightvault.custody.context import ROLES, RequestContext, Room, require_role
from weightvault.custody.gates import VersionAttestation
from weightvault.custody.models import load_model
from weightvault.custody.store import Base, _UtcDateTime
from weightvault.errors import FormatError, PolicyError

__all__ = ["LIKELIHOODS", "SEVERITIES", "RiskEntry", "RiskRegister", "render_register"]

LIKELIHOODS = ("rare", "unlikely", "possible", "likely", "almost-certain")
SEVERITIES = ("negligible", "minor", "moderate", "major", "severe")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_FIELDS = {"hazard", "likelihood", "severity", "mitigations", "owner", "evidence"}
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


def parse_entry(doc: object) -> dict[str, Any]:
    """A risk entry as given (strict: unknown fields, scales and digests are checked)."""
    if not isinstance(doc, dict):
        raise FormatError("risk entry: expected an object")
    extra = set(doc) - _FIELDS
    if extra:
        raise FormatError(f"risk entry: unknown field {sorted(extra)[0]}")
    for name in ("hazard", "likelihood", "severity", "owner"):
        if name not in doc:
            raise FormatError(f"risk entry.{name}: missing")
    if doc["likelihood"] not in LIKELIHOODS:
        raise FormatError(f"risk entry.likelihood: expected one of {', '.join(LIKELIHOODS)}")
    if doc["severity"] not in SEVERITIES:
        raise FormatError(f"risk entry.severity: expected one of {', '.join(SEVERITIES)}")
    evidence = _texts(doc.get("evidence", []), "risk entry.evidence")
    for index, digest in enumerate(evidence):
        if not _DIGEST_RE.fullmatch(digest):
            raise FormatError(f"risk entry.evidence[{index}]: expected sha256:<64 hex digits>")
    return {
        "hazard": _text(doc["hazard"], "risk entry.hazard"),
        "likelihood": doc["likelihood"],
        "severity": doc["severity"],
        "mitigations": _texts(doc.get("mitigations", []), "risk entry.mitigations"),
        "owner": _names.check_principal_name(doc["owner"], "risk entry.owner"),
        "evidence": evidence,
    }


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
        "created_by": row.created_by,
        "created_at": format_time(row.created_at),
        "log_index": row.log_index,
    }


class RiskRegister(Room):
    """Adding, listing and exporting risk entries."""

    def add(self, ctx: RequestContext, model_name: str, doc: object) -> dict[str, Any]:
        """Add an entry (the model's owner, an admin or an auditor); every evidence digest must
        name an attestation attached to one of the model's versions."""
        principal = require_role(ctx, "owner", "admin", "auditor")
        _names.check_model_name(model_name)
        ctx.detail.update(model=model_name)
        entry = parse_entry(doc)
        with self._store.session() as session:
            model, _policy = load_model(session, model_name, lock=True)
            if principal.name != model.owner and not principal.role_set & {"admin", "auditor"}:
                raise PolicyError("only the model's owner, an admin or an auditor adds risks")
            for digest in entry["evidence"]:
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
            row = RiskEntry(
                id=secrets.token_hex(16),
                model=model_name,
                hazard=entry["hazard"],
                likelihood=entry["likelihood"],
                severity=entry["severity"],
                mitigations=json.dumps(entry["mitigations"]),
                owner=entry["owner"],
                evidence=json.dumps(entry["evidence"]),
                created_by=principal.name,
                created_at=self._clock(),
                log_index=-1,
            )
            index, _entry = self._audit(ctx, "allowed", {"risk": {**entry, "id": row.id}})
            row.log_index = index
            session.add(row)
            session.flush()
            return _view(row)

    def list(self, ctx: RequestContext, model_name: str) -> list[dict[str, Any]]:
        require_role(ctx, *ROLES)
        _names.check_model_name(model_name)
        with self._store.session(read_only=True) as session:
            load_model(session, model_name)
            rows = session.scalars(
                select(RiskEntry)
                .where(RiskEntry.model == model_name)
                .order_by(RiskEntry.created_at)
            )
            out = [_view(r) for r in rows]
        self._audit(ctx, "allowed", {"model": model_name, "count": len(out)})
        return out


def render_register(model_name: str, entries: list[dict[str, Any]], fmt: str) -> bytes:
    """The register as JSON (``json``) or a Markdown table (``md``)."""
    if fmt == "json":
        document = {"model": model_name, "risks": entries}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if fmt != "md":
        raise FormatError("format: expected json or md")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# Risk register: {model_name}",
        "",
        "| hazard | likelihood | severity | mitigations | owner | evidence | log |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        mitigations = "; ".join(cell(m) for m in e["mitigations"]) or "none"
        evidence = ", ".join(f"`{d}`" for d in e["evidence"]) or "none"
        lines.append(
            f"| {cell(e['hazard'])} | {e['likelihood']} | {e['severity']} | {mitigations} | "
            f"{e['owner']} | {evidence} | {e['log_index']} |"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")
