"""The custody service's decisions, independent of HTTP.

Each public method takes a :class:`RequestContext` (who is asking, how, and a hook that writes the
audit entry) and either returns a result or raises a :class:`~weightvault.errors.WeightvaultError`
that the HTTP layer turns into a status code. State changes follow one order: check everything,
write the audit entry (durably, in the transparency log), then commit the database transaction. If
the log cannot be written the transaction is rolled back and the request fails (fail closed); if
the process dies between the two, the log holds an entry for an action that did not happen, never
the reverse.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from weightvault import _b64 as b64
from weightvault.crypt import (
    FileContext,
    X25519Recipient,
    encrypt_file,
    parse_identity,
    rewrap_header,
    unlock_header,
)
from weightvault.custody import _names
from weightvault.custody.alerts import AlertEvent, AlertSink
from weightvault.custody.approvals import (
    RequestTerms,
    format_time,
    key_id_of,
    load_public_key_bytes,
    open_envelope,
)
from weightvault.custody.audit import AuditTrail
from weightvault.custody.blobs import BlobStore, open_blob_store
from weightvault.custody.config import ServiceConfig
from weightvault.custody.kek import ServiceKek
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import (
    Approval,
    DeliveryHeader,
    Denial,
    Egress,
    GrantRequest,
    Model,
    ModelVersion,
    Principal,
    Store,
    Token,
    VersionFile,
    utcnow,
)
from weightvault.custody.tokens import IssuedToken, issue_token, parse_token, secret_matches
from weightvault.errors import (
    FormatError,
    InputError,
    PolicyError,
    VerificationError,
    WeightvaultError,
)

__all__ = [
    "ROLES",
    "AuthenticationError",
    "ConflictError",
    "Custody",
    "NotFoundError",
    "RequestContext",
]

ROLES = ("admin", "owner", "approver", "reader", "auditor")
_MAX_MANIFEST = 4 * 1024 * 1024
_MAX_FILES = 10_000
_CLOCK_SKEW = dt.timedelta(minutes=5)


class ReadableBody(Protocol):
    """What an upload body must offer (a file object, or the app's stream reader)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, limit: int = -1, /) -> bytes: ...


class AuthenticationError(PolicyError):
    """No token, or a token that is unknown, malformed or revoked (HTTP 401)."""


class NotFoundError(InputError):
    """The named object does not exist (HTTP 404)."""


class ConflictError(PolicyError):
    """The object exists already or the request was already decided (HTTP 409)."""


@dataclass
class RequestContext:
    """One HTTP request as the service sees it."""

    request_id: str
    method: str
    path: str
    client: str
    principal: Principal | None = None
    token_id: str | None = None
    token_hmac: str | None = None
    action: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    audited: bool = False

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else ""


class Custody:
    """One replica of the service: database, blobs, service KEK, audit trail, alerts."""

    def __init__(self, config: ServiceConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        config.prepare()
        self.config = config
        self.clock = clock
        self.store = Store(config.database_url)
        self.store.create_schema()
        self.blobs: BlobStore = open_blob_store(config.blobs, config.data_dir)
        self.kek = ServiceKek(parse_identity(config.kek_spec))
        self.staging = config.data_dir / "staging"
        shutil.rmtree(self.staging, ignore_errors=True)  # plaintext left by a killed upload
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.trail = AuditTrail(
            config.log_location,
            config.log_origin,
            config.load_log_signer(),
            config.load_hmac_key(),
            replica=config.replica,
            checkpoint_every=config.checkpoint_every,
            checkpoint_interval_s=config.checkpoint_interval_s,
        )
        self.alerts = AlertSink(self.trail.append, config.webhook_url, replica=config.replica)
        self.sweep_orphans()

    def sweep_orphans(self, *, grace_s: float = 3600.0) -> list[str]:
        """Remove ciphertext of uploads that died before registration (older than ``grace_s``,
        so uploads still running on another replica are left alone)."""
        import time

        with self.store.session(read_only=True) as session:
            referenced = set(session.scalars(select(ModelVersion.blob_prefix)))
        try:
            return self.blobs.sweep(referenced, time.time() - grace_s)
        except Exception:  # a failed sweep must not stop the service; it runs at every start
            return []

    def close(self) -> None:
        self.alerts.close()
        self.trail.close()
        self.store.dispose()

    # -- audit ---------------------------------------------------------------------------------

    def audit(
        self, ctx: RequestContext, outcome: str, detail: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """Append this request's entry now (before the response and before any commit)."""
        event = {
            "action": ctx.action or "http",
            "client": ctx.client,
            "detail": {**ctx.detail, **(detail or {})},
            "method": ctx.method,
            "outcome": outcome,
            "path": ctx.path,
            "principal": ctx.name or None,
            "request_id": ctx.request_id,
            "time": format_time(self.clock()),
            "token": ctx.token_hmac,
        }
        result = self.trail.append(event)
        ctx.audited = True
        return result

    def record_denial(self, ctx: RequestContext, message: str) -> None:
        """Count a refused request; several in a short time raise an alert."""
        subject = ctx.name or ctx.token_hmac or f"client:{ctx.client}"
        now = self.clock()
        with self.store.session() as session:
            session.add(Denial(time=now, subject=subject[:128]))
            since = now - dt.timedelta(seconds=self.config.denials_window_s)
            count = session.scalar(
                select(func.count())
                .select_from(Denial)
                .where(Denial.subject == subject[:128], Denial.time > since)
            )
            if count == self.config.repeated_denials:
                self.alerts.emit(
                    session,
                    AlertEvent(
                        "denials.repeated",
                        now,
                        principal=ctx.name or None,
                        detail={"subject": subject, "count": count, "last": message[:200]},
                    ),
                )

    # -- authentication ------------------------------------------------------------------------

    def authenticate(self, ctx: RequestContext, authorization: str | None) -> None:
        """Resolve ``Authorization: Bearer <token>`` to a principal, or raise 401."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("missing bearer token", hint="run 'weightvault vault login'")
        text = authorization[len("Bearer ") :].strip()
        ctx.token_hmac = self.trail.hmac_secret(text)
        parsed = parse_token(text)
        failure = AuthenticationError("invalid or revoked token")
        if parsed is None:
            raise failure
        token_id, secret = parsed
        with self.store.session(read_only=True) as session:
            token = session.get(Token, token_id)
            if token is None or token.revoked_at is not None:
                raise failure
            if not secret_matches(secret, token.secret_sha256):
                raise failure
            principal = session.get(Principal, token.principal)
            if principal is None or principal.disabled:
                raise failure
            session.expunge(principal)
        ctx.principal = principal
        ctx.token_id = token_id

    @staticmethod
    def require_role(ctx: RequestContext, *roles: str) -> Principal:
        principal = ctx.principal
        if principal is None:
            raise AuthenticationError("missing bearer token")
        if not principal.role_set & set(roles):
            raise PolicyError(
                f"principal {principal.name!r} lacks the role for this "
                f"({' or '.join(roles)} needed)"
            )
        return principal

    # -- principals and tokens -----------------------------------------------------------------

    def bootstrap_admin(self, name: str, *, via: str = "serve --init-admin") -> str | None:
        """Create the first admin and return its token; None if principals exist already.

        ``via`` names the local command that asked, in the audit entry."""
        _names.check_principal_name(name)
        token = issue_token()
        with self.store.session() as session:
            if session.scalar(select(func.count()).select_from(Principal)):
                return None
            session.add(Principal(name=name, roles="admin", created_at=self.clock()))
            session.flush()
            self._add_token(session, name, token, "bootstrap")
            ctx = RequestContext(secrets.token_hex(16), "CLI", via, "local")
            ctx.action = "principal.bootstrap"
            self.audit(ctx, "allowed", {"name": name, "token_id": token.token_id})
        return token.text

    def _check_roles(self, roles: object) -> str:
        if not isinstance(roles, list) or not roles or len(roles) > len(ROLES):
            raise FormatError("roles: expected a non-empty list")
        for role in roles:
            if role not in ROLES:
                raise FormatError(f"roles: unknown role {role!r} (use {', '.join(ROLES)})")
        return ",".join(sorted(set(roles)))

    def _check_recipient(self, recipient: object) -> str:
        from weightvault.crypt.recipients import X25519Recipient

        if not isinstance(recipient, str) or len(recipient) > 200:
            raise FormatError("recipient: expected a wvx25519:... string")
        try:
            X25519Recipient.from_string(recipient)
        except WeightvaultError as exc:
            raise FormatError(f"recipient: {exc.message}") from exc
        return recipient

    def _approval_key(self, pem: object) -> tuple[bytes, str]:
        if not isinstance(pem, str) or len(pem) > 4096:
            raise FormatError("approval_key_pem: expected a PEM public key")
        raw = load_public_key_bytes(pem.encode("ascii", "replace"), "approval_key_pem")
        return raw, key_id_of(raw)

    def create_principal(
        self,
        ctx: RequestContext,
        name: str,
        roles: list[str],
        recipient: str | None,
        approval_key_pem: str | None,
    ) -> dict[str, Any]:
        self.require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        role_text = self._check_roles(roles)
        recipient_text = self._check_recipient(recipient) if recipient else None
        key = self._approval_key(approval_key_pem) if approval_key_pem else None
        token = issue_token()
        with self.store.session() as session:
            if session.get(Principal, name) is not None:
                raise ConflictError(f"principal {name!r} exists already")
            if key and session.scalar(select(Principal).where(Principal.approval_key_id == key[1])):
                raise ConflictError(
                    "this approval key is registered to another principal",
                    hint="every approver needs their own key",
                )
            session.add(
                Principal(
                    name=name,
                    roles=role_text,
                    created_at=self.clock(),
                    recipient=recipient_text,
                    approval_key=key[0] if key else None,
                    approval_key_id=key[1] if key else None,
                )
            )
            session.flush()
            self._add_token(session, name, token, "initial")
            self.audit(
                ctx,
                "allowed",
                {
                    "name": name,
                    "roles": role_text,
                    "approval_key_id": key[1] if key else None,
                    "token_id": token.token_id,
                },
            )
        return {"name": name, "roles": role_text.split(","), "token": token.text}

    def update_principal(self, ctx: RequestContext, name: str, changes: dict[str, Any]) -> None:
        self.require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        with self.store.session() as session:
            principal = session.get(Principal, name)
            if principal is None:
                raise NotFoundError(f"principal {name!r} not found")
            record: dict[str, Any] = {"name": name}
            if changes.get("roles") is not None:
                principal.roles = self._check_roles(changes["roles"])
                record["roles"] = principal.roles
            if changes.get("recipient") is not None:
                principal.recipient = self._check_recipient(changes["recipient"])
                record["recipient"] = principal.recipient
            if changes.get("approval_key_pem") is not None:
                raw, key_id = self._approval_key(changes["approval_key_pem"])
                other = session.scalar(select(Principal).where(Principal.approval_key_id == key_id))
                if other is not None and other.name != name:
                    raise ConflictError("this approval key is registered to another principal")
                principal.approval_key, principal.approval_key_id = raw, key_id
                record["approval_key_id"] = key_id
            if changes.get("disabled") is not None:
                principal.disabled = bool(changes["disabled"])
                record["disabled"] = principal.disabled
            self.audit(ctx, "allowed", record)

    def _add_token(self, session: Session, name: str, token: IssuedToken, label: str) -> None:
        """Store a newly issued token for ``name`` (only its SHA-256 is kept)."""
        session.add(
            Token(
                id=token.token_id,
                principal=name,
                secret_sha256=token.secret_sha256,
                label=label,
                created_at=self.clock(),
            )
        )

    def issue_token(self, ctx: RequestContext, name: str, label: str) -> dict[str, Any]:
        self.require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        token = issue_token()
        with self.store.session() as session:
            if session.get(Principal, name) is None:
                raise NotFoundError(f"principal {name!r} not found")
            self._add_token(session, name, token, label[:128])
            self.audit(ctx, "allowed", {"name": name, "token_id": token.token_id})
        return {"name": name, "token_id": token.token_id, "token": token.text}

    def revoke_token(self, ctx: RequestContext, token_id: str) -> None:
        principal = self.require_role(ctx, *ROLES)
        with self.store.session() as session:
            token = session.get(Token, token_id)
            if token is None:
                raise NotFoundError("token not found")
            if token.principal != principal.name and "admin" not in principal.role_set:
                raise PolicyError("only an admin may revoke another principal's token")
            token.revoked_at = token.revoked_at or self.clock()
            self.audit(ctx, "allowed", {"token_id": token_id, "owner": token.principal})

    def whoami(self, ctx: RequestContext) -> dict[str, Any]:
        principal = self.require_role(ctx, *ROLES)
        self.audit(ctx, "allowed")
        return {
            "name": principal.name,
            "roles": sorted(principal.role_set),
            "recipient": principal.recipient,
            "approval_key_id": principal.approval_key_id,
        }

    # -- models and versions -------------------------------------------------------------------

    def _policy_for(self, session: Session, policy: ModelPolicy) -> None:
        for approver in policy.approvers:
            principal = session.get(Principal, approver)
            if principal is None or "approver" not in principal.role_set:
                raise PolicyError(
                    f"policy.approvers: {approver!r} is not a principal with the approver role"
                )
            if principal.approval_key_id is None:
                raise PolicyError(f"policy.approvers: {approver!r} has no approval key")

    def create_model(self, ctx: RequestContext, name: str, policy_doc: object) -> dict[str, Any]:
        principal = self.require_role(ctx, "owner", "admin")
        _names.check_model_name(name, "name")
        policy = ModelPolicy.from_dict(policy_doc)
        with self.store.session() as session:
            if session.get(Model, name) is not None:
                raise ConflictError(f"model {name!r} exists already")
            self._policy_for(session, policy)
            session.add(
                Model(
                    name=name,
                    owner=principal.name,
                    policy_json=policy.to_json(),
                    created_at=self.clock(),
                )
            )
            self.audit(ctx, "allowed", {"model": name, "policy": policy.to_dict()})
        return {"name": name, "owner": principal.name, "policy": policy.to_dict()}

    def set_policy(self, ctx: RequestContext, name: str, policy_doc: object) -> dict[str, Any]:
        principal = self.require_role(ctx, "owner", "admin")
        _names.check_model_name(name, "model")
        policy = ModelPolicy.from_dict(policy_doc)
        with self.store.session() as session:
            model = session.get(Model, name)
            if model is None:
                raise NotFoundError(f"model {name!r} not found")
            if model.owner != principal.name and "admin" not in principal.role_set:
                raise PolicyError(f"only the owner of {name!r} or an admin may change its policy")
            self._policy_for(session, policy)
            old = model.policy_json
            model.policy_json = policy.to_json()
            self.audit(
                ctx, "allowed", {"model": name, "old": json.loads(old), "new": policy.to_dict()}
            )
        return {"name": name, "policy": policy.to_dict()}

    def _model(
        self, session: Session, name: str, *, lock: bool = False
    ) -> tuple[Model, ModelPolicy]:
        model = session.get(Model, _names.check_model_name(name), with_for_update=lock)
        if model is None:
            raise NotFoundError(f"model {name!r} not found")
        return model, ModelPolicy.from_json(model.policy_json)

    def inventory(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """Every model and version: owner, size, digests, signer, who has access, and the time it
        would take to exfiltrate it at the configured budgets.

        Admins and auditors see every model; an owner sees only the models it owns (who holds
        access to someone else's weights is need-to-know).
        """
        principal = self.require_role(ctx, "admin", "auditor", "owner")
        sees_all = bool(principal.role_set & {"admin", "auditor"})
        now = self.clock()
        out = []
        with self.store.session() as session:
            query = select(Model).order_by(Model.name)
            if not sees_all:
                query = query.where(Model.owner == principal.name)
            for model in session.scalars(query):
                policy = ModelPolicy.from_json(model.policy_json)
                # The model budget caps every principal together: size / (budget / window).
                rate = policy.egress_bytes_per_window / self.config.window_s
                versions = []
                for version in session.scalars(
                    select(ModelVersion)
                    .where(ModelVersion.model == model.name)
                    .order_by(ModelVersion.registered_at)
                ):
                    files = session.scalars(
                        select(VersionFile)
                        .where(
                            VersionFile.model == model.name, VersionFile.version == version.version
                        )
                        .order_by(VersionFile.index)
                    ).all()
                    grants = session.scalars(
                        select(GrantRequest).where(
                            GrantRequest.model == model.name,
                            GrantRequest.version == version.version,
                            GrantRequest.status == "active",
                        )
                    ).all()
                    access = sorted(
                        {
                            g.requester
                            for g in grants
                            if g.grant_expires_at is not None and g.grant_expires_at > now
                        }
                    )
                    versions.append(
                        {
                            "version": version.version,
                            "size": version.size,
                            "files": [
                                {"path": f.path, "size": f.size, "sha256": f.sha256} for f in files
                            ],
                            "signer": version.signer,
                            "registered_by": version.registered_by,
                            "registered_at": format_time(version.registered_at),
                            "access": access,
                            "time_to_exfiltrate_s": version.size / rate,
                        }
                    )
                out.append(
                    {
                        "model": model.name,
                        "owner": model.owner,
                        "approvals_required": policy.approvals_required,
                        "approvers": list(policy.approvers),
                        "egress_bytes_per_window": policy.egress_bytes_per_window,
                        "window_s": self.config.window_s,
                        "versions": versions,
                    }
                )
            self.audit(ctx, "allowed", {"models": len(out)})
        return out

    # -- upload --------------------------------------------------------------------------------

    def upload(
        self, ctx: RequestContext, model_name: str, version: str, body: ReadableBody
    ) -> dict[str, Any]:
        """Register a version from a framed body: one JSON line, then the files' bytes in order.

        The JSON line: ``{"signature": base64(OMS bundle), "files": [{"path", "size"}, ...]}``.
        Steps: (1) the uploader owns the model; (2) stream the files to a private staging folder;
        (3) verify the OMS signature against the policy's signers; (4) scan; (5) encrypt each file
        under a fresh DEK wrapped by the service KEK into the blob store; (6) audit, then
        register the version and its files in one transaction.
        """
        principal = self.require_role(ctx, "owner", "admin")
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        with self.store.session() as session:
            model, policy = self._model(session, model_name)
            if model.owner != principal.name:
                raise PolicyError(f"only the owner of {model_name!r} may upload versions")
            if session.get(ModelVersion, (model_name, version)) is not None:
                raise ConflictError(f"{model_name}@{version} exists already")
        line = body.readline(_MAX_MANIFEST + 1)
        if not line.endswith(b"\n"):
            raise FormatError("upload: the first line must be the JSON manifest (at most 4 MiB)")
        try:
            manifest = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"upload manifest: not valid JSON ({exc})") from exc
        if (
            not isinstance(manifest, dict)
            or not {"files", "signature"} <= set(manifest)
            or not (set(manifest) <= {"files", "signature", "single_file"})
        ):
            raise FormatError("upload manifest: expected 'files', 'signature' and 'single_file'")
        single = manifest.get("single_file", False)
        if not isinstance(single, bool):
            raise FormatError("upload manifest.single_file: expected true or false")
        signature = b64.decode(
            manifest["signature"], "upload manifest.signature", max_size=1 << 20, canonical=False
        )
        files = manifest["files"]
        if not isinstance(files, list) or not 1 <= len(files) <= _MAX_FILES:
            raise FormatError(f"upload manifest.files: expected 1 to {_MAX_FILES} entries")
        entries: list[tuple[str, int]] = []
        seen: set[str] = set()
        total = 0
        for i, item in enumerate(files):
            where = f"upload manifest.files[{i}]"
            if not isinstance(item, dict) or set(item) != {"path", "size"}:
                raise FormatError(f"{where}: expected path and size")
            path = _names.check_file_path(item["path"], f"{where}.path")
            if path == ".":
                raise FormatError(f"{where}.path: name the file (single_file: true for one file)")
            size = item["size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise FormatError(f"{where}.size: expected a non-negative integer")
            if path in seen:
                raise FormatError(f"{where}.path: listed twice")
            if single and (len(files) != 1 or "/" in path or path == "."):
                raise FormatError(f"{where}.path: a single-file model is one plain file name")
            seen.add(path)
            total += size
            entries.append((path, size))
        if total > self.config.max_upload_bytes:
            raise PolicyError(f"upload: {total} bytes is over the service's limit")
        upload_id = secrets.token_hex(16)
        ctx.detail.update(
            {"model": model_name, "version": version, "upload_id": upload_id, "bytes": total}
        )
        self.audit(ctx, "started")  # an upload that dies half-way is still on record
        ctx.audited = False
        stage = Path(tempfile.mkdtemp(prefix=f"{upload_id}-", dir=self.staging))
        try:
            root = stage / "model"
            digests = self._receive(body, root, entries)
            model_root = root / entries[0][0] if single else root
            signer = self._verify_signature(model_root, signature, policy)
            scan_summary = self._scan(model_root)
            stored = self._encrypt_and_store(
                model_root, single, upload_id, model_name, entries, signature
            )
        except BaseException:
            self.blobs.delete_prefix(upload_id)
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        now = self.clock()
        try:
            with self.store.session() as session:
                if session.get(ModelVersion, (model_name, version)) is not None:
                    raise ConflictError(f"{model_name}@{version} exists already")
                session.add(
                    ModelVersion(
                        model=model_name,
                        version=version,
                        size=total,
                        file_count=len(entries),
                        signer=signer,
                        signature=signature,
                        scan_summary=scan_summary,
                        registered_by=principal.name,
                        registered_at=now,
                        blob_prefix=upload_id,
                    )
                )
                for index, ((path, size), (header_size, body_size)) in enumerate(
                    zip(entries, stored, strict=True)
                ):
                    session.add(
                        VersionFile(
                            model=model_name,
                            version=version,
                            index=index,
                            path=path,
                            size=size,
                            sha256=digests[index],
                            blob_key=f"{upload_id}/{index}.wvenc",
                            header_size=header_size,
                            body_size=body_size,
                        )
                    )
                session.flush()
                self.audit(
                    ctx,
                    "allowed",
                    {
                        "signer": signer,
                        "signature_sha256": hashlib.sha256(signature).hexdigest(),
                        "files": [
                            {"path": p, "size": s, "sha256": d}
                            for (p, s), d in zip(entries, digests, strict=True)
                        ],
                        "scan": scan_summary,
                    },
                )
        except BaseException:
            self.blobs.delete_prefix(upload_id)
            raise
        return {
            "model": model_name,
            "version": version,
            "size": total,
            "files": len(entries),
            "signer": signer,
            "scan": scan_summary,
        }

    def _receive(self, body: ReadableBody, root: Path, entries: list[tuple[str, int]]) -> list[str]:
        digests = []
        root.mkdir(mode=0o700)
        for path, size in entries:
            target = root / path
            hasher = hashlib.sha256()
            remaining = size
            try:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise FormatError(
                    f"upload manifest: file path {path!r} collides with another file's folder"
                ) from exc
            with os.fdopen(fd, "wb") as out:
                while remaining:
                    piece = body.read(min(remaining, 1 << 20))
                    if not piece:
                        raise FormatError(f"upload: body ended inside file {path!r}")
                    hasher.update(piece)
                    out.write(piece)
                    remaining -= len(piece)
            digests.append(hasher.hexdigest())
        if body.read(1):
            raise FormatError("upload: bytes after the last file")
        return digests

    def _verify_signature(self, model_root: Path, signature: bytes, policy: ModelPolicy) -> str:
        """Check the OMS signature over the staged tree against each signer the policy allows."""
        from weightvault.custody import _integrations

        return _integrations.verify_model_signature(model_root, signature, policy)

    def _scan(self, root: Path) -> str:
        from weightvault.custody import _integrations

        return _integrations.scan_clean(root)

    def _encrypt_and_store(
        self,
        base: Path,
        single: bool,
        upload_id: str,
        model_name: str,
        entries: list[tuple[str, int]],
        signature: bytes,
    ) -> list[tuple[int, int]]:
        manifest_digest = "sha256:" + hashlib.sha256(signature).hexdigest()
        stored = []
        for index, (path, _size) in enumerate(entries):
            source = base if single else base / path
            context = FileContext(
                model=model_name,
                path=path,
                file_index=index,
                file_count=len(entries),
                set_id=upload_id,
                manifest_digest=manifest_digest,
            )
            target = self.staging / f"{upload_id}-{index}.wvenc"
            sealed = encrypt_file(source, target, context, [self.kek])
            source.unlink()
            self.blobs.put_file(f"{upload_id}/{index}.wvenc", target)
            target.unlink(missing_ok=True)
            stored.append((sealed.header_size, sealed.body_size))
        return stored

    # -- requests, approvals, grants -----------------------------------------------------------

    def _terms(self, grant: GrantRequest) -> RequestTerms:
        return RequestTerms(
            request_id=grant.id,
            model=grant.model,
            version=grant.version,
            grantee=grant.requester,
            justification=grant.justification,
            duration_s=grant.duration_s,
            byte_budget=grant.byte_budget,
        )

    def _grant_view(self, grant: GrantRequest, approvals: list[Approval]) -> dict[str, Any]:
        now = self.clock()
        status = grant.status
        if status == "active" and grant.grant_expires_at and grant.grant_expires_at <= now:
            status = "expired"
        if status == "pending" and grant.request_expires_at <= now:
            status = "expired"
        return {
            "id": grant.id,
            "model": grant.model,
            "version": grant.version,
            "requester": grant.requester,
            "justification": grant.justification,
            "duration_s": grant.duration_s,
            "byte_budget": grant.byte_budget,
            "bytes_used": grant.bytes_used,
            "status": status,
            "approvals_required": grant.approvals_required,
            "approvals": [
                {"approver": a.approver, "decision": a.decision, "log_index": a.log_index}
                for a in approvals
            ],
            "created_at": format_time(grant.created_at),
            "expires_at": format_time(grant.grant_expires_at) if grant.grant_expires_at else None,
            "request_digest": self._terms(grant).digest(),
        }

    def create_request(
        self,
        ctx: RequestContext,
        model_name: str,
        version: str,
        justification: str,
        duration_s: int,
        byte_budget: int,
    ) -> dict[str, Any]:
        principal = self.require_role(ctx, "reader")
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        _names.check_justification(justification)
        _names.check_duration(duration_s)
        _names.check_byte_count(byte_budget, "byte_budget")
        if principal.recipient is None:
            raise PolicyError(
                f"principal {principal.name!r} has no X25519 recipient to encrypt pulls to",
                hint="ask an admin to set one",
            )
        now = self.clock()
        with self.store.session() as session:
            _model, policy = self._model(session, model_name)
            if session.get(ModelVersion, (model_name, version)) is None:
                raise NotFoundError(f"{model_name}@{version} not found")
            if duration_s > min(policy.max_grant_duration_s, self.config.max_grant_duration_s):
                raise PolicyError(
                    f"duration_s: the policy allows at most {policy.max_grant_duration_s} s"
                )
            if byte_budget > policy.max_grant_bytes:
                raise PolicyError(
                    f"byte_budget: the policy allows at most {policy.max_grant_bytes} bytes"
                )
            grant = GrantRequest(
                id=secrets.token_hex(16),
                model=model_name,
                version=version,
                requester=principal.name,
                justification=justification,
                duration_s=duration_s,
                byte_budget=byte_budget,
                created_at=now,
                request_expires_at=now + dt.timedelta(seconds=policy.request_ttl_s),
                status="pending",
                approvals_required=policy.approvals_required,
                bytes_used=0,
            )
            session.add(grant)
            session.flush()
            view = self._grant_view(grant, [])
            self.audit(ctx, "allowed", {"request": view})
        return view

    def get_request(self, ctx: RequestContext, request_id: str) -> dict[str, Any]:
        principal = self.require_role(ctx, *ROLES)
        _names.check_request_id(request_id)
        with self.store.session() as session:
            grant = session.get(GrantRequest, request_id)
            if grant is None:
                raise NotFoundError("request not found")
            _model, policy = self._model(session, grant.model)
            visible = (
                grant.requester == principal.name
                or principal.role_set & {"admin", "auditor"}
                or principal.name in policy.approvers
            )
            if not visible:
                raise NotFoundError("request not found")
            approvals = list(
                session.scalars(select(Approval).where(Approval.request_id == request_id))
            )
            view = self._grant_view(grant, approvals)
            self.audit(ctx, "allowed", {"request_id": request_id})
        return view

    def list_requests(self, ctx: RequestContext, status: str | None) -> list[dict[str, Any]]:
        principal = self.require_role(ctx, *ROLES)
        if status is not None and status not in ("pending", "active", "denied", "revoked"):
            raise FormatError("status: expected pending, active, denied or revoked")
        out = []
        with self.store.session() as session:
            query = select(GrantRequest).order_by(GrantRequest.created_at)
            if status:
                query = query.where(GrantRequest.status == status)
            for grant in session.scalars(query.limit(1000)):
                if grant.requester != principal.name and not principal.role_set & {
                    "admin",
                    "auditor",
                }:
                    _model, policy = self._model(session, grant.model)
                    if principal.name not in policy.approvers:
                        continue
                approvals = list(
                    session.scalars(select(Approval).where(Approval.request_id == grant.id))
                )
                out.append(self._grant_view(grant, approvals))
            self.audit(ctx, "allowed", {"count": len(out)})
        return out

    def submit_approval(
        self, ctx: RequestContext, request_id: str, envelope_b64: str
    ) -> dict[str, Any]:
        """Record a signed approval or denial.

        Checks, in order: (1) approver role, named in the model's policy, with a registered key;
        (2) not the requester; (3) the request is pending and not expired; (4) the envelope's
        signature verifies under the approver's registered key; (5) the statement names this
        approver and binds exactly this request's terms; (6) it is current and not valid longer
        than the policy allows; (7) no earlier approval by this principal or this key.
        """
        principal = self.require_role(ctx, "approver")
        _names.check_request_id(request_id)
        envelope = b64.decode(envelope_b64, "envelope", max_size=16 * 1024, canonical=False)
        now = self.clock()
        with self.store.session() as session:
            grant = session.get(GrantRequest, request_id, with_for_update=True)
            if grant is None:
                raise NotFoundError("request not found")
            _model, policy = self._model(session, grant.model)
            # (1)
            if principal.name not in policy.approvers:
                raise PolicyError(f"{principal.name!r} is not an approver for {grant.model!r}")
            approver = session.get(Principal, principal.name)
            if approver is None or approver.approval_key is None or not approver.approval_key_id:
                raise PolicyError(f"{principal.name!r} has no registered approval key")
            # (2)
            if grant.requester == principal.name:
                raise PolicyError("self-approval: the requester cannot approve their own request")
            # (3)
            if grant.status != "pending":
                raise ConflictError(f"request is {grant.status}, not pending")
            if grant.request_expires_at <= now:
                raise PolicyError("request has expired; file a new one")
            # (4)
            statement = open_envelope(envelope, approver.approval_key)
            # (5)
            if statement.approver != principal.name:
                raise VerificationError("approval names another approver")
            statement.check_binds(self._terms(grant))
            # (6)
            if statement.issued_at > now + _CLOCK_SKEW:
                raise VerificationError("approval is issued in the future")
            if statement.expires_at <= now:
                raise VerificationError("approval has expired; sign a fresh one")
            if statement.expires_at - statement.issued_at > dt.timedelta(
                seconds=policy.approval_validity_s
            ):
                raise PolicyError(
                    f"approval is valid for longer than the policy's {policy.approval_validity_s} s"
                )
            # (7)
            earlier = session.scalars(
                select(Approval).where(
                    Approval.request_id == request_id,
                    (Approval.approver == principal.name)
                    | (Approval.key_id == approver.approval_key_id),
                )
            ).first()
            if earlier is not None:
                raise ConflictError("this approver (or this key) has already decided this request")
            approvals = list(
                session.scalars(select(Approval).where(Approval.request_id == request_id))
            )
            # Only approvals from principals who are still eligible count: named in the current
            # policy, holding the approver role, not disabled, and signed with their current key.
            valid = [
                a
                for a in approvals
                if a.decision == "approve"
                and a.expires_at > now
                and self._still_approver(session, policy, a)
            ]
            record: dict[str, Any] = {
                "request_id": request_id,
                "model": grant.model,
                "version": grant.version,
                "grantee": grant.requester,
                "decision": statement.decision,
                "key_id": approver.approval_key_id,
                "envelope": base64.b64encode(envelope).decode("ascii"),
            }
            # A policy tightened while the request was pending applies to it (never loosened).
            grant.approvals_required = max(grant.approvals_required, policy.approvals_required)
            if statement.decision == "deny":
                grant.status = "denied"
                record["status"] = "denied"
            elif len(valid) + 1 >= grant.approvals_required:
                grant.status = "active"
                grant.activated_at = now
                grant.grant_expires_at = now + dt.timedelta(seconds=grant.duration_s)
                record["status"] = "active"
                record["grant_expires_at"] = format_time(grant.grant_expires_at)
            else:
                record["status"] = "pending"
            ctx.action = "request.deny" if statement.decision == "deny" else "request.approve"
            index, entry = self.audit(ctx, "allowed", record)
            approval = Approval(
                request_id=request_id,
                approver=principal.name,
                key_id=approver.approval_key_id,
                decision=statement.decision,
                envelope=envelope,
                expires_at=statement.expires_at,
                created_at=now,
                log_index=index,
                log_entry=entry,
            )
            session.add(approval)
            try:
                session.flush()
            except IntegrityError as exc:
                raise ConflictError("this approver has already decided this request") from exc
            view = self._grant_view(grant, [*approvals, approval])
        return view

    @staticmethod
    def _still_approver(session: Session, policy: ModelPolicy, approval: Approval) -> bool:
        """Whether an earlier approval still counts towards M (its approver is still eligible)."""
        if approval.approver not in policy.approvers:
            return False
        who = session.get(Principal, approval.approver)
        return (
            who is not None
            and not who.disabled
            and "approver" in who.role_set
            and who.approval_key_id == approval.key_id
        )

    def revoke(self, ctx: RequestContext, request_id: str) -> dict[str, Any]:
        principal = self.require_role(ctx, *ROLES)
        _names.check_request_id(request_id)
        with self.store.session() as session:
            grant = session.get(GrantRequest, request_id, with_for_update=True)
            if grant is None:
                raise NotFoundError("request not found")
            model, _policy = self._model(session, grant.model)
            allowed = (
                "admin" in principal.role_set
                or model.owner == principal.name
                or grant.requester == principal.name
            )
            if not allowed:
                raise PolicyError("only an admin, the model's owner or the grantee may revoke")
            if grant.status in ("revoked", "denied"):
                raise ConflictError(f"request is {grant.status} already")
            grant.status = "revoked"
            grant.revoked_at = self.clock()
            grant.revoked_by = principal.name
            self.audit(ctx, "allowed", {"request_id": request_id, "model": grant.model})
            approvals = list(
                session.scalars(select(Approval).where(Approval.request_id == request_id))
            )
            return self._grant_view(grant, approvals)

    # -- pull ----------------------------------------------------------------------------------

    def _active_grant(self, session: Session, ctx: RequestContext, grant_id: str) -> GrantRequest:
        principal = self.require_role(ctx, "reader")
        _names.check_request_id(grant_id, "grant_id")
        grant = session.get(GrantRequest, grant_id)
        if grant is None or grant.requester != principal.name:
            raise NotFoundError("grant not found")
        now = self.clock()
        if grant.status != "active":
            raise PolicyError(f"grant is {grant.status}, not active")
        if grant.grant_expires_at is None or grant.grant_expires_at <= now:
            raise PolicyError("grant has expired")
        return grant

    def grant_files(self, ctx: RequestContext, grant_id: str) -> dict[str, Any]:
        with self.store.session() as session:
            grant = self._active_grant(session, ctx, grant_id)
            files = session.scalars(
                select(VersionFile)
                .where(VersionFile.model == grant.model, VersionFile.version == grant.version)
                .order_by(VersionFile.index)
            ).all()
            listing = []
            for f in files:
                header = self._delivery_header(session, grant, f, ctx)
                listing.append(
                    {
                        "index": f.index,
                        "path": f.path,
                        "size": f.size,
                        "sha256": f.sha256,
                        "delivered_size": len(header) + f.body_size,
                    }
                )
            self.audit(ctx, "allowed", {"grant_id": grant_id, "files": len(listing)})
        return {
            "grant_id": grant_id,
            "model": grant.model,
            "version": grant.version,
            "bytes_remaining": grant.byte_budget - grant.bytes_used,
            "files": listing,
        }

    def _delivery_header(
        self, session: Session, grant: GrantRequest, vfile: VersionFile, ctx: RequestContext
    ) -> bytes:
        """The file's header re-wrapped for the grantee (made once, then reused for resumes)."""
        existing = session.get(DeliveryHeader, (grant.id, vfile.index))
        if existing is not None:
            return existing.header
        principal = session.get(Principal, grant.requester)
        if principal is None or principal.recipient is None:
            raise PolicyError("grantee has no X25519 recipient")
        stored = b"".join(self.blobs.read_range(vfile.blob_key, 0, vfile.header_size))
        opened = unlock_header(stored, [self.kek], vfile.path)
        recipient = X25519Recipient.from_string(principal.recipient)
        delivered = rewrap_header(opened.header, opened.dek, [recipient])
        session.add(DeliveryHeader(grant_id=grant.id, file_index=vfile.index, header=delivered))
        session.flush()
        return delivered

    def open_pull(
        self, ctx: RequestContext, grant_id: str, index: int, range_header: str | None
    ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        """Authorize a pull of one file (a byte range of it) and return status, headers, body.

        Steps: (1) active grant of this principal, in its window; (2) the approvals that
        activated it are in the signed audit log (inclusion proofs); (3) the range; (4) the first
        slice debited from the grant, principal and model budgets; (5) audit; then the body
        streams, debiting each further slice before it is sent.
        """
        with self.store.session() as session:
            # (1)
            grant = self._active_grant(session, ctx, grant_id)
            if isinstance(index, bool) or not 0 <= index < _MAX_FILES:
                raise FormatError("index: out of range")
            vfile = session.get(VersionFile, (grant.model, grant.version, index))
            if vfile is None:
                raise NotFoundError("file not found")
            approvals = list(
                session.scalars(
                    select(Approval).where(
                        Approval.request_id == grant_id, Approval.decision == "approve"
                    )
                )
            )
            header = self._delivery_header(session, grant, vfile, ctx)
        # (2)
        if len(approvals) < grant.approvals_required:
            raise PolicyError("grant lacks its approvals")
        self.trail.require_included([(a.log_index, a.log_entry) for a in approvals])
        # (3)
        total = len(header) + vfile.body_size
        start, end = _parse_range(range_header, total)
        length = end - start
        # (4)
        slice_size = self.config.debit_slice_bytes
        first = min(length, slice_size)
        self._debit(ctx, grant_id, first)
        ctx.detail.update(
            {"grant_id": grant_id, "file": vfile.path, "range": [start, end], "total": total}
        )
        # (5)
        self.audit(ctx, "allowed")
        headers = {
            "Content-Length": str(length),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            # Percent-encoded: header values are latin-1, file paths are any Unicode.
            "X-Weightvault-Path": urllib.parse.quote(vfile.path, safe="/"),
        }
        status = 200
        if range_header is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"

        def body() -> Iterator[bytes]:
            debited = first
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
                    for piece in self.blobs.read_range(vfile.blob_key, body_start, end - position):
                        if sent + len(piece) > debited:
                            while sent + len(piece) > debited:
                                more = min(slice_size, length - debited)
                                self._debit(ctx, grant_id, more)
                                debited += more
                        else:
                            # Bytes already debited still stop at once when the grant is
                            # revoked or expires mid-stream, or the requester's token is revoked
                            # or the requester disabled (the debit re-checks it otherwise).
                            self._check_still_active(ctx, grant_id)
                        sent += len(piece)
                        yield piece
            finally:
                if sent != length:
                    self._note_incomplete(ctx, grant_id, sent, length)

        return status, headers, body()

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
        with self.store.session(read_only=True) as session:
            row = session.execute(query).one_or_none()
        if row is None or row[0] != "active":
            raise PolicyError("grant was revoked")
        if row[1] is None or row[1] <= self.clock():
            raise PolicyError("grant has expired")
        if ctx.token_id is not None and not row[2]:
            raise AuthenticationError("token was revoked during the transfer")
        if ctx.principal is not None and not row[3]:
            raise AuthenticationError("principal was disabled during the transfer")

    @staticmethod
    def _check_caller_still_valid(session: Session, ctx: RequestContext) -> None:
        """A pull in flight stops once its token is revoked or its principal disabled.

        Authentication runs once per request; a long download must not outlive the credential
        that started it (grant revocation alone would leave a stolen token streaming).
        """
        if ctx.token_id is not None:
            token = session.get(Token, ctx.token_id)
            if token is None or token.revoked_at is not None:
                raise AuthenticationError("token was revoked during the transfer")
        if ctx.principal is not None:
            principal = session.get(Principal, ctx.principal.name)
            if principal is None or principal.disabled:
                raise AuthenticationError("principal was disabled during the transfer")

    def _note_incomplete(self, ctx: RequestContext, grant_id: str, sent: int, length: int) -> None:
        try:
            ctx.action = "pull.incomplete"
            self.audit(ctx, "stopped", {"sent": sent, "expected": length})
        except WeightvaultError:
            pass

    def _debit(self, ctx: RequestContext, grant_id: str, nbytes: int) -> None:
        """Charge ``nbytes`` to the grant and to the principal's and model's window budgets."""
        if nbytes <= 0:
            return
        now = self.clock()
        since = now - dt.timedelta(seconds=self.config.window_s)
        with self.store.session() as session:
            grant = session.get(GrantRequest, grant_id, with_for_update=True)
            if grant is None or grant.status != "active":
                raise PolicyError("grant was revoked")
            if grant.grant_expires_at is None or grant.grant_expires_at <= now:
                raise PolicyError("grant has expired")
            # Lock the model and principal rows too: replicas debiting other grants of the same
            # model or principal queue here, so the window sums below cannot race (PostgreSQL;
            # SQLite's BEGIN IMMEDIATE already serializes writers).
            _model, policy = self._model(session, grant.model, lock=True)
            session.get(Principal, grant.requester, with_for_update=True)
            self._check_caller_still_valid(session, ctx)
            principal_used = session.scalar(
                select(func.coalesce(func.sum(Egress.nbytes), 0)).where(
                    Egress.principal == grant.requester, Egress.time > since
                )
            )
            model_used = session.scalar(
                select(func.coalesce(func.sum(Egress.nbytes), 0)).where(
                    Egress.model == grant.model, Egress.time > since
                )
            )
            principal_used = int(principal_used or 0)
            model_used = int(model_used or 0)
            limits = (
                ("grant", grant.bytes_used, grant.byte_budget),
                ("principal", principal_used, self.config.principal_egress_bytes_per_window),
                ("model", model_used, policy.egress_bytes_per_window),
            )
            refusal = None
            for name, used, budget in limits:
                if used + nbytes > budget:
                    self.alerts.emit(
                        session,
                        AlertEvent(
                            "budget.exhausted",
                            now,
                            principal=grant.requester,
                            model=grant.model,
                            detail={"budget": name, "used": used, "limit": budget, "asked": nbytes},
                        ),
                    )
                    refusal = PolicyError(
                        f"pull refused: the {name} byte budget is exhausted "
                        f"({used} of {budget} bytes used, {nbytes} more asked)"
                    )
                    break
            if refusal is None:
                self._charge(session, grant, nbytes, now, principal_used)
        if refusal is not None:
            raise refusal

    def _charge(
        self, session: Session, grant: GrantRequest, nbytes: int, now: dt.datetime, used: int
    ) -> None:
        """Record the egress and raise the volume and first-time alerts."""
        principal_used = used
        grant_id = grant.id
        first_pull = not session.scalar(
            select(func.count()).select_from(Egress).where(Egress.principal == grant.requester)
        )
        grant.bytes_used += nbytes
        session.add(
            Egress(
                time=now,
                principal=grant.requester,
                model=grant.model,
                grant_id=grant_id,
                nbytes=nbytes,
            )
        )
        if first_pull:
            self.alerts.emit(
                session,
                AlertEvent(
                    "principal.first_pull",
                    now,
                    principal=grant.requester,
                    model=grant.model,
                    detail={"grant_id": grant_id},
                ),
            )
        budget = self.config.principal_egress_bytes_per_window
        threshold = budget * self.config.unusual_volume_fraction
        if principal_used < threshold <= principal_used + nbytes:
            self.alerts.emit(
                session,
                AlertEvent(
                    "volume.unusual",
                    now,
                    principal=grant.requester,
                    model=grant.model,
                    detail={"window_bytes": principal_used + nbytes, "budget": budget},
                ),
            )

    # -- audit access --------------------------------------------------------------------------

    def audit_export(self, ctx: RequestContext) -> bytes:
        self.require_role(ctx, "auditor", "admin")
        self.audit(ctx, "allowed")
        return self.trail.export()

    def audit_key(self, ctx: RequestContext) -> dict[str, Any]:
        self.require_role(ctx, *ROLES)
        self.audit(ctx, "allowed")
        note = self.trail.latest_checkpoint()
        return {
            "log_key": self.trail.verifier_key.to_text(),
            "checkpoint": note.decode() if note else None,
        }

    def list_alerts(self, ctx: RequestContext) -> list[dict[str, Any]]:
        from weightvault.custody.store import Alert

        self.require_role(ctx, "auditor", "admin")
        with self.store.session() as session:
            rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(1000)).all()
            out = [
                {
                    "time": format_time(a.time),
                    "kind": a.kind,
                    "principal": a.principal,
                    "model": a.model,
                    "detail": json.loads(a.detail),
                }
                for a in rows
            ]
            self.audit(ctx, "allowed", {"count": len(out)})
        return out


def _parse_range(header: str | None, total: int) -> tuple[int, int]:
    """``bytes=START-`` or ``bytes=START-END`` (one range); returns ``[start, end)``."""
    if header is None:
        return 0, total
    if len(header) > 100 or not header.startswith("bytes="):
        raise FormatError("Range: expected bytes=START-[END]")
    spec = header[len("bytes=") :]
    if "," in spec or "-" not in spec:
        raise FormatError("Range: one range only, bytes=START-[END]")
    first, last = spec.split("-", 1)
    if not _ascii_digits(first) or (last and not _ascii_digits(last)):
        raise FormatError("Range: expected bytes=START-[END]")
    start = int(first)
    end = int(last) + 1 if last else total
    end = min(end, total)
    if start >= total or start >= end:
        raise RangeNotSatisfiable(total)
    return start, end


def _ascii_digits(text: str) -> bool:
    """``0-9`` only: ``str.isdigit`` also accepts e.g. ``\u00b2``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


class RangeNotSatisfiable(InputError):
    """The range starts past the end (HTTP 416)."""

    def __init__(self, total: int) -> None:
        super().__init__(f"Range: not satisfiable (size {total})")
        self.total = total
