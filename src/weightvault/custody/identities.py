"""The identities room: principals (roles, X25519 recipient, approval key) and their API tokens.

A request is authenticated once, from ``Authorization: Bearer <token>``: the token's id finds
its row, the secret is compared in constant time with the stored SHA-256, and the token must not
be revoked nor its principal disabled; every failure looks the same. Only admins create and
change principals and issue tokens; anyone may revoke their own token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from weightvault.crypt import X25519Recipient
from weightvault.custody import _names
from weightvault.custody.approvals import key_id_of, load_public_key_bytes
from weightvault.custody.context import ROLES, RequestContext, Room, Shared, require_role
from weightvault.custody.errors import AuthenticationError, ConflictError, NotFoundError, found
from weightvault.custody.store import Principal, Token
from weightvault.custody.tokens import IssuedToken, issue_token, parse_token, secret_matches
from weightvault.errors import FormatError, PolicyError, WeightvaultError

__all__ = ["Identities"]


def _check_roles(roles: object) -> str:
    if not isinstance(roles, list) or not roles or len(roles) > len(ROLES):
        raise FormatError("roles: expected a non-empty list")
    for role in roles:
        if role not in ROLES:
            raise FormatError(f"roles: unknown role {role!r} (use {', '.join(ROLES)})")
    return ",".join(sorted(set(roles)))


def _check_recipient(recipient: object) -> str:
    if not isinstance(recipient, str) or len(recipient) > 200:
        raise FormatError("recipient: expected a wvx25519:... string")
    try:
        X25519Recipient.from_string(recipient)
    except WeightvaultError as exc:
        raise FormatError(f"recipient: {exc.message}") from exc
    return recipient


def _approval_key(pem: object) -> tuple[bytes, str]:
    if not isinstance(pem, str) or len(pem) > 4096:
        raise FormatError("approval_key_pem: expected a PEM public key")
    raw = load_public_key_bytes(pem.encode("ascii", "replace"), "approval_key_pem")
    return raw, key_id_of(raw)


class Identities(Room):
    """Authentication, principals and tokens."""

    def __init__(self, shared: Shared, hmac_secret: Callable[[str], str]) -> None:
        super().__init__(shared)
        self._hmac_secret = hmac_secret

    def authenticate(self, ctx: RequestContext, authorization: str | None) -> None:
        """Resolve ``Authorization: Bearer <token>`` to a principal, or raise 401."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("missing bearer token", hint="run 'weightvault vault login'")
        text = authorization[len("Bearer ") :].strip()
        ctx.token_hmac = self._hmac_secret(text)
        parsed = parse_token(text)
        failure = AuthenticationError("invalid or revoked token")
        if parsed is None:
            raise failure
        token_id, secret = parsed
        with self._store.session(read_only=True) as session:
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

    def bootstrap_admin(self, name: str, *, via: str = "serve --init-admin") -> str | None:
        """Create the first admin and return its token; None if principals exist already.

        ``via`` names the local command that asked, in the audit entry."""
        _names.check_principal_name(name)
        token = issue_token()
        with self._store.session() as session:
            if session.scalar(select(func.count()).select_from(Principal)):
                return None
            session.add(Principal(name=name, roles="admin", created_at=self._clock()))
            session.flush()
            self._add_token(session, name, token, "bootstrap")
            ctx = RequestContext(secrets.token_hex(16), "CLI", via, "local")
            ctx.action = "principal.bootstrap"
            self._audit(ctx, "allowed", {"name": name, "token_id": token.token_id})
        return token.text

    def create_principal(
        self,
        ctx: RequestContext,
        name: str,
        roles: list[str],
        recipient: str | None,
        approval_key_pem: str | None,
    ) -> dict[str, Any]:
        require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        role_text = _check_roles(roles)
        recipient_text = _check_recipient(recipient) if recipient else None
        key = _approval_key(approval_key_pem) if approval_key_pem else None
        token = issue_token()
        with self._store.session() as session:
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
                    created_at=self._clock(),
                    recipient=recipient_text,
                    approval_key=key[0] if key else None,
                    approval_key_id=key[1] if key else None,
                )
            )
            session.flush()
            self._add_token(session, name, token, "initial")
            self._audit(
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
        require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        with self._store.session() as session:
            principal = found(session.get(Principal, name), f"principal {name!r}")
            record: dict[str, Any] = {"name": name}
            if changes.get("roles") is not None:
                principal.roles = _check_roles(changes["roles"])
                record["roles"] = principal.roles
            if changes.get("recipient") is not None:
                principal.recipient = _check_recipient(changes["recipient"])
                record["recipient"] = principal.recipient
            if changes.get("approval_key_pem") is not None:
                raw, key_id = _approval_key(changes["approval_key_pem"])
                other = session.scalar(select(Principal).where(Principal.approval_key_id == key_id))
                if other is not None and other.name != name:
                    raise ConflictError("this approval key is registered to another principal")
                principal.approval_key, principal.approval_key_id = raw, key_id
                record["approval_key_id"] = key_id
            if changes.get("disabled") is not None:
                principal.disabled = bool(changes["disabled"])
                record["disabled"] = principal.disabled
            self._audit(ctx, "allowed", record)

    def _add_token(self, session: Session, name: str, token: IssuedToken, label: str) -> None:
        """Store a newly issued token for ``name`` (only its SHA-256 is kept)."""
        session.add(
            Token(
                id=token.token_id,
                principal=name,
                secret_sha256=token.secret_sha256,
                label=label,
                created_at=self._clock(),
            )
        )

    def issue_token(self, ctx: RequestContext, name: str, label: str) -> dict[str, Any]:
        require_role(ctx, "admin")
        _names.check_principal_name(name, "name")
        token = issue_token()
        with self._store.session() as session:
            if session.get(Principal, name) is None:
                raise NotFoundError(f"principal {name!r} not found")
            self._add_token(session, name, token, label[:128])
            self._audit(ctx, "allowed", {"name": name, "token_id": token.token_id})
        return {"name": name, "token_id": token.token_id, "token": token.text}

    def revoke_token(self, ctx: RequestContext, token_id: str) -> None:
        principal = require_role(ctx, *ROLES)
        with self._store.session() as session:
            token = found(session.get(Token, token_id), "token")
            if token.principal != principal.name and "admin" not in principal.role_set:
                raise PolicyError("only an admin may revoke another principal's token")
            token.revoked_at = token.revoked_at or self._clock()
            self._audit(ctx, "allowed", {"token_id": token_id, "owner": token.principal})

    def whoami(self, ctx: RequestContext) -> dict[str, Any]:
        principal = require_role(ctx, *ROLES)
        self._audit(ctx, "allowed")
        return {
            "name": principal.name,
            "roles": sorted(principal.role_set),
            "recipient": principal.recipient,
            "approval_key_id": principal.approval_key_id,
        }
