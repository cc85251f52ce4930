"""The console room: passkey registration and sign-in, and console sessions.

WebAuthn ceremonies use the ``webauthn`` library (py_webauthn). State lives in the database so
replicas share it: a page's ceremony row (before sign-in) or the session row holds the CSRF token
and the one ceremony under way; a ceremony is taken out of its row when its answer arrives, so
an answer counts once. Cookies are random 256-bit values; the database keeps their SHA-256.

Decisions (a fresh assertion over a request's or a job's terms) are :mod:`.decisions`' work;
they use this room's ceremonies and its assertion check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_authentication_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from weightvault import _b64 as b64
from weightvault.custody import _names
from weightvault.custody.approvals import format_time
from weightvault.custody.console.ledger import REGISTER_ACTION, REVOKE_ACTION
from weightvault.custody.console.signatures import (
    COSE_ALGORITHMS,
    open_enrolment,
    passkey_key_id,
)
from weightvault.custody.context import ROLES, RequestContext, Room, require_role
from weightvault.custody.errors import AuthenticationError, ConflictError, NotFoundError
from weightvault.custody.store import (
    ConsoleSession,
    EnrolmentCode,
    Principal,
    WebAuthnCredential,
)
from weightvault.errors import FormatError, PolicyError, VerificationError

__all__ = ["Console", "RelyingParty", "SessionView", "credential_json", "webauthn_failure"]

SESSION_LIFETIME = dt.timedelta(hours=4)
CEREMONY_LIFETIME = dt.timedelta(minutes=10)
ENROLMENT_LIFETIME = dt.timedelta(minutes=15)
_ALGORITHMS = [COSEAlgorithmIdentifier(alg) for alg in COSE_ALGORITHMS]
_MAX_CREDENTIAL_JSON = 16 * 1024


@dataclass(frozen=True)
class RelyingParty:
    """Where the console is served: the exact origin browsers report, and the WebAuthn RP id."""

    origin: str
    rp_id: str

    def expects(self, challenge: bytes) -> dict[str, Any]:
        """What every ceremony's answer must show (``webauthn``'s ``expected_*`` arguments): this
        challenge, this RP id and origin, and user verification (PIN or biometric, not mere
        presence), for registration and assertion alike."""
        return {
            "expected_challenge": challenge,
            "expected_rp_id": self.rp_id,
            "expected_origin": self.origin,
            "require_user_verification": True,
        }


@dataclass(frozen=True)
class SessionView:
    """A console session or a page's ceremony row, as a route needs it."""

    cookie_sha256: str
    kind: str
    principal: str | None
    csrf: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _user_id(name: str) -> bytes:
    """A stable WebAuthn user handle for a principal (not secret, not the name itself)."""
    return hashlib.sha256(b"weightvault custody principal\0" + name.encode()).digest()


def _past(deadline: dt.datetime, now: dt.datetime) -> bool:
    """Whether a session, page or enrolment code ``deadline`` has passed (never a grant's)."""
    return deadline <= now


def webauthn_failure(exc: Exception) -> VerificationError:
    return VerificationError(f"the passkey's answer does not verify ({exc})")


def credential_json(text: str) -> dict[str, Any]:
    if len(text) > _MAX_CREDENTIAL_JSON:
        raise FormatError("credential: too large")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise FormatError("credential: not JSON") from exc
    if not isinstance(doc, dict):
        raise FormatError("credential: expected an object")
    return doc


class Console(Room):
    """Enrolment codes, passkeys, console sessions and passkey-signed decisions."""

    # -- enrolment (with an API token) ---------------------------------------------------------

    def enrol(
        self, ctx: RequestContext, *, proof: bytes | None = None, principal: str | None = None
    ) -> dict[str, Any]:
        """A one-time code (15 minutes) that registers a passkey.

        For oneself: an API token is not enough when one can approve. A principal with an
        Ed25519 approval key proves it holds it (``proof``, from :func:`sign_enrolment`, each
        accepted once); an approver without one asks an admin. For ``principal`` (someone
        else): admins only, as they may already register approval keys for anyone.
        """
        caller = require_role(ctx, *ROLES)
        target = principal or caller.name
        _names.check_principal_name(target, "principal")
        code = secrets.token_urlsafe(32)
        now = self._clock()
        proof_sha256 = None
        with self._store.session() as session:
            who = session.get(Principal, target)
            if target != caller.name:
                require_role(ctx, "admin")
                if who is None:
                    raise NotFoundError(f"principal {target!r} not found")
            else:
                assert who is not None
                if who.approval_key is not None:
                    if proof is None:
                        raise PolicyError(
                            "a registration link for an approver needs a request signed with "
                            "their approval key",
                            hint="or ask an admin for one",
                        )
                    open_enrolment(proof, who.approval_key, target, now)
                    proof_sha256 = hashlib.sha256(proof).hexdigest()
                    used = session.scalar(
                        select(EnrolmentCode).where(EnrolmentCode.proof_sha256 == proof_sha256)
                    )
                    if used is not None:
                        raise ConflictError("this enrolment request was used already")
                elif "approver" in who.role_set:
                    raise PolicyError(
                        "an approver without an approval key gets a registration link from an admin"
                    )
            session.add(
                EnrolmentCode(
                    code_sha256=_sha256(code),
                    principal=target,
                    issued_by=caller.name,
                    proof_sha256=proof_sha256,
                    created_at=now,
                    expires_at=now + ENROLMENT_LIFETIME,
                )
            )
            self._audit(
                ctx,
                "allowed",
                {"principal": target, "proof": "approval key" if proof_sha256 else None},
            )
        return {
            "principal": target,
            "code": code,
            "path": f"/console/register?code={code}",
            "expires_in_s": int(ENROLMENT_LIFETIME.total_seconds()),
        }

    def passkeys(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """Registered passkeys: every one for admins and auditors, else the caller's own."""
        caller = require_role(ctx, *ROLES)
        with self._store.session(read_only=True) as session:
            query = select(WebAuthnCredential).order_by(WebAuthnCredential.created_at)
            if not caller.role_set & {"admin", "auditor"}:
                query = query.where(WebAuthnCredential.principal == caller.name)
            out = [
                {
                    "key_id": c.key_id,
                    "principal": c.principal,
                    "algorithm": COSE_ALGORITHMS.get(c.algorithm, str(c.algorithm)),
                    "created_at": format_time(c.created_at),
                    "revoked_at": format_time(c.revoked_at) if c.revoked_at else None,
                }
                for c in session.scalars(query)
            ]
        self._audit(ctx, "allowed", {"count": len(out)})
        return out

    def revoke_passkey(self, ctx: RequestContext, key_id: str) -> dict[str, Any]:
        """Revoke a passkey (its owner or an admin) and end its owner's console sessions.
        Its earlier approvals stop counting towards pending requests' M."""
        caller = require_role(ctx, *ROLES)
        ctx.action = REVOKE_ACTION
        with self._store.session() as session:
            credential = session.get(WebAuthnCredential, key_id[:64], with_for_update=True)
            if credential is None or (
                credential.principal != caller.name and "admin" not in caller.role_set
            ):
                raise NotFoundError("passkey not found")
            if credential.revoked_at is not None:
                raise ConflictError("passkey is revoked already")
            credential.revoked_at = self._clock()
            session.execute(
                delete(ConsoleSession).where(ConsoleSession.principal == credential.principal)
            )
            self._audit(ctx, "allowed", {"key_id": key_id, "principal": credential.principal})
        return {"key_id": key_id, "principal": credential.principal, "revoked": True}

    def _enrolment(self, session: Session, code: str) -> EnrolmentCode:
        if not isinstance(code, str) or not 20 <= len(code) <= 100:
            raise AuthenticationError("registration code is invalid, used or expired")
        row = session.get(EnrolmentCode, _sha256(code), with_for_update=True)
        if row is None or row.used_at is not None or _past(row.expires_at, self._clock()):
            raise AuthenticationError("registration code is invalid, used or expired")
        return row

    def enrolment_name(self, code: str) -> str:
        """Whose passkey a registration code registers (refusing a spent one)."""
        with self._store.session(read_only=True) as session:
            return self._enrolment(session, code).principal

    # -- rows: pages' ceremonies and sessions ---------------------------------------------------

    def open_page(self) -> tuple[str, SessionView]:
        """A fresh ceremony row for a sign-in or registration page: (cookie value, view)."""
        cookie = secrets.token_urlsafe(32)
        now = self._clock()
        row = ConsoleSession(
            id_sha256=_sha256(cookie),
            kind="ceremony",
            principal=None,
            csrf=secrets.token_urlsafe(32),
            ceremony=None,
            created_at=now,
            expires_at=now + CEREMONY_LIFETIME,
        )
        with self._store.session() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at.op("<=")(now)))
            session.add(row)
        return cookie, SessionView(row.id_sha256, row.kind, None, row.csrf)

    def find(self, cookie: str | None, kind: str) -> SessionView | None:
        """The live row of ``kind`` for a cookie value, or None."""
        if not cookie or len(cookie) > 100:
            return None
        with self._store.session(read_only=True) as session:
            row = session.get(ConsoleSession, _sha256(cookie))
            if row is None or row.kind != kind or _past(row.expires_at, self._clock()):
                return None
            return SessionView(row.id_sha256, row.kind, row.principal, row.csrf)

    def authenticate(self, ctx: RequestContext, view: SessionView) -> Principal:
        """Make the session's principal the request's (refusing a disabled one)."""
        with self._store.session(read_only=True) as session:
            principal = session.get(Principal, view.principal or "")
            if principal is None or principal.disabled:
                raise AuthenticationError("session ended; sign in again")
            session.expunge(principal)
        ctx.principal = principal
        ctx.token_hmac = f"console-session:{view.cookie_sha256[:16]}"
        return principal

    def put_ceremony(self, view: SessionView, ceremony: dict[str, Any]) -> None:
        with self._store.session() as session:
            row = session.get(ConsoleSession, view.cookie_sha256, with_for_update=True)
            if row is None:
                raise AuthenticationError("page expired; reload it")
            row.ceremony = json.dumps(ceremony, sort_keys=True)

    def take_ceremony(self, session: Session, view: SessionView, kind: str) -> dict[str, Any]:
        """Remove and return the ceremony under way (an answer is accepted once)."""
        row = session.get(ConsoleSession, view.cookie_sha256, with_for_update=True)
        if row is None or _past(row.expires_at, self._clock()):
            raise AuthenticationError("page expired; reload it")
        if row.ceremony is None:
            raise ConflictError("no passkey request is under way (it was answered already)")
        ceremony: dict[str, Any] = json.loads(row.ceremony)
        row.ceremony = None
        if ceremony.get("kind") != kind:
            raise ConflictError("another passkey request is under way; reload the page")
        return ceremony

    # -- registration --------------------------------------------------------------------------

    def registration_options(self, view: SessionView, code: str, rp: RelyingParty) -> str:
        with self._store.session(read_only=True) as session:
            name = self._enrolment(session, code).principal
            existing = session.scalars(
                select(WebAuthnCredential.credential_id).where(WebAuthnCredential.principal == name)
            ).all()
        options = generate_registration_options(
            rp_id=rp.rp_id,
            rp_name="weightvault custody",
            user_name=name,
            user_id=_user_id(name),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in existing
            ],
            supported_pub_key_algs=_ALGORITHMS,
        )
        self.put_ceremony(
            view,
            {"kind": "register", "challenge": b64.encode(options.challenge), "code": _sha256(code)},
        )
        return options_to_json(options)

    def register(
        self, ctx: RequestContext, view: SessionView, code: str, credential: str, rp: RelyingParty
    ) -> dict[str, Any]:
        """Verify the browser's new credential and keep it; log its public key."""
        ctx.action = REGISTER_ACTION
        now = self._clock()
        with self._store.session() as session:
            ceremony = self.take_ceremony(session, view, "register")
            enrolment = self._enrolment(session, code)
            if ceremony["code"] != enrolment.code_sha256:
                raise ConflictError("registration code changed; reload the page")
            try:
                verified = verify_registration_response(
                    credential=credential_json(credential),
                    supported_pub_key_algs=_ALGORITHMS,
                    **rp.expects(b64.decode(ceremony["challenge"], "challenge")),
                )
            except WebAuthnException as exc:
                raise webauthn_failure(exc) from exc
            decoded = decode_credential_public_key(verified.credential_public_key)
            public_key = decoded_public_key_to_cryptography(decoded).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            algorithm = int(decoded.alg)
            key_id = passkey_key_id(public_key)
            credential_id = bytes_to_base64url(verified.credential_id)
            if session.scalar(
                select(WebAuthnCredential).where(
                    (WebAuthnCredential.credential_id == credential_id)
                    | (WebAuthnCredential.key_id == key_id)
                )
            ):
                raise ConflictError("this passkey is registered already")
            principal = session.get(Principal, enrolment.principal)
            if principal is None or principal.disabled:
                raise AuthenticationError("registration code is invalid, used or expired")
            enrolment.used_at = now
            session.add(
                WebAuthnCredential(
                    key_id=key_id,
                    credential_id=credential_id,
                    principal=principal.name,
                    public_key=public_key,
                    cose_key=verified.credential_public_key,
                    algorithm=algorithm,
                    sign_count=verified.sign_count,
                    created_at=now,
                )
            )
            ctx.principal = principal
            self._audit(
                ctx,
                "allowed",
                {
                    "principal": principal.name,
                    "key_id": key_id,
                    "public_key": b64.encode(public_key),
                    "algorithm": algorithm,
                    "credential_id": credential_id,
                    "aaguid": verified.aaguid,
                    "rp_id": rp.rp_id,
                    "origin": rp.origin,
                },
            )
        return {"principal": principal.name, "key_id": key_id}

    # -- sign-in -------------------------------------------------------------------------------

    def credentials(self, session: Session, name: str) -> list[WebAuthnCredential]:
        return list(
            session.scalars(
                select(WebAuthnCredential).where(
                    WebAuthnCredential.principal == name, WebAuthnCredential.revoked_at.is_(None)
                )
            )
        )

    def login_options(self, view: SessionView, name: str, rp: RelyingParty) -> str:
        """Assertion options for signing in: any of this device's passkeys, or ``name``'s."""
        allowed: list[PublicKeyCredentialDescriptor] = []
        if name:
            _names.check_principal_name(name, "name")
            with self._store.session(read_only=True) as session:
                allowed = [
                    PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id))
                    for c in self.credentials(session, name)
                ]
        options = generate_authentication_options(
            rp_id=rp.rp_id,
            allow_credentials=allowed,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        self.put_ceremony(view, {"kind": "login", "challenge": b64.encode(options.challenge)})
        return options_to_json(options)

    def verify_assertion(
        self,
        session: Session,
        credential: AuthenticationCredential,
        challenge: bytes,
        rp: RelyingParty,
    ) -> WebAuthnCredential:
        """Check an assertion with the stored key; advance its sign count."""
        stored = session.scalar(
            select(WebAuthnCredential)
            .where(WebAuthnCredential.credential_id == bytes_to_base64url(credential.raw_id))
            .with_for_update()
        )
        if stored is None or stored.revoked_at is not None:
            raise AuthenticationError("unknown or revoked passkey")
        try:
            verified = verify_authentication_response(
                credential=credential,
                credential_public_key=stored.cose_key,
                credential_current_sign_count=stored.sign_count,
                **rp.expects(challenge),
            )
        except WebAuthnException as exc:
            raise webauthn_failure(exc) from exc
        stored.sign_count = verified.new_sign_count
        return stored

    def login(
        self, ctx: RequestContext, view: SessionView, credential: str, rp: RelyingParty
    ) -> tuple[str, SessionView]:
        """Verify a sign-in assertion; a new session (never the page's row, never a cookie the
        browser brought: no session fixation). Returns (cookie value, session)."""
        ctx.action = "console.login"
        try:
            parsed = parse_authentication_credential_json(credential_json(credential))
        except WebAuthnException as exc:
            raise webauthn_failure(exc) from exc
        now = self._clock()
        cookie = secrets.token_urlsafe(32)
        with self._store.session() as session:
            ceremony = self.take_ceremony(session, view, "login")
            stored = self.verify_assertion(
                session, parsed, b64.decode(ceremony["challenge"], "challenge"), rp
            )
            principal = session.get(Principal, stored.principal)
            if principal is None or principal.disabled:
                raise AuthenticationError("unknown or revoked passkey")
            session.execute(
                delete(ConsoleSession).where(ConsoleSession.id_sha256 == view.cookie_sha256)
            )
            row = ConsoleSession(
                id_sha256=_sha256(cookie),
                kind="session",
                principal=principal.name,
                csrf=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + SESSION_LIFETIME,
            )
            session.add(row)
            ctx.principal = principal
            self._audit(ctx, "allowed", {"key_id": stored.key_id})
        return cookie, SessionView(row.id_sha256, "session", principal.name, row.csrf)

    def logout(self, ctx: RequestContext, view: SessionView) -> None:
        ctx.action = "console.logout"
        with self._store.session() as session:
            session.execute(
                delete(ConsoleSession).where(ConsoleSession.id_sha256 == view.cookie_sha256)
            )
            self._audit(ctx, "allowed")
