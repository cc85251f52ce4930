"""Offline checks of passkey approvals in an exported audit log (used by ``audit verify``).

Walking the log in order: a passkey registration entry logs the credential's public key; a
request's creation entry logs its terms; a passkey approval entry must then carry an assertion
that verifies under the logged key of a credential registered earlier to the same approver (and
not revoked since), over a statement for exactly those terms, logged while it was valid. Jobs
the same way: a ``job.submit`` entry logs the job's terms digest, and a passkey ``job.approve``
or ``job.deny`` entry must sign exactly it. A
service that wrote an approval nobody's authenticator signed (or edited one) is caught here, with
only the log and its key in hand.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from weightvault import _b64 as b64
from weightvault.custody.approvals import CLOCK_SKEW, RequestTerms, parse_time
from weightvault.custody.console.signatures import (
    PasskeyApproval,
    passkey_key_id,
    verify_passkey_envelope,
)
from weightvault.errors import VerificationError, WeightvaultError

__all__ = [
    "DECISION_ACTIONS",
    "JOB_DECISION_ACTIONS",
    "REGISTER_ACTION",
    "REVOKE_ACTION",
    "PasskeyLedger",
]

REGISTER_ACTION = "console.passkey.register"
REVOKE_ACTION = "console.passkey.revoke"
DECISION_ACTIONS = ("request.approve", "request.deny")
JOB_DECISION_ACTIONS = ("job.approve", "job.deny")


@dataclass(frozen=True)
class _Credential:
    principal: str
    public_key: bytes
    algorithm: int


class PasskeyLedger:
    """Feed it every audit event in log order (:meth:`check`); it raises on the first passkey
    approval that does not verify and counts those that do."""

    def __init__(self) -> None:
        self._credentials: dict[str, _Credential] = {}
        self._requests: dict[str, str] = {}
        self._jobs: dict[str, str] = {}
        self.checked = 0

    def check(self, index: int, event: dict[str, Any]) -> None:
        if event.get("outcome") != "allowed":
            return
        action = event.get("action")
        detail = event.get("detail")
        if not isinstance(detail, dict):
            return
        try:
            if action == REGISTER_ACTION:
                self._register(detail)
            elif action == REVOKE_ACTION:
                self._credentials.pop(str(detail.get("key_id")), None)
            elif action == "request.create" and isinstance(detail.get("request"), dict):
                view = detail["request"]
                self._requests[str(view.get("id"))] = RequestTerms.of_view(view).digest()
            elif action == "job.submit" and isinstance(detail.get("job"), dict):
                if isinstance(detail.get("terms_digest"), str):
                    self._jobs[str(detail["job"].get("id"))] = detail["terms_digest"]
            elif action in DECISION_ACTIONS and isinstance(detail.get("envelope"), str):
                self._decision(event, detail, "request", self._requests)
            elif action in JOB_DECISION_ACTIONS and isinstance(detail.get("envelope"), str):
                self._decision(event, detail, "job", self._jobs)
        except WeightvaultError as exc:
            raise VerificationError(f"entry {index}: {exc.message}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"entry {index}: malformed passkey record") from exc

    def _register(self, detail: dict[str, Any]) -> None:
        public_key = b64.decode(detail["public_key"], "public_key", max_size=4096)
        key_id = detail["key_id"]
        if passkey_key_id(public_key) != key_id:
            raise VerificationError("passkey registration: key id does not match its key")
        algorithm = detail["algorithm"]
        if isinstance(algorithm, bool) or not isinstance(algorithm, int):
            raise VerificationError("passkey registration: algorithm is not an integer")
        self._credentials[key_id] = _Credential(str(detail["principal"]), public_key, algorithm)

    def _decision(
        self, event: dict[str, Any], detail: dict[str, Any], what: str, filed: dict[str, str]
    ) -> None:
        """Check one passkey decision on a ``what`` (request or job) whose terms digests, by
        id, are ``filed``."""
        try:
            envelope = base64.b64decode(detail["envelope"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise VerificationError("approval envelope is not base64") from exc
        if not PasskeyApproval.is_one(envelope):
            return  # an Ed25519 DSSE approval (its public key is not in the log)
        credential = self._credentials.get(str(detail.get("key_id")))
        if credential is None:
            raise VerificationError(
                "passkey approval by a credential the log never registered (or revoked)"
            )
        statement, _assertion = verify_passkey_envelope(
            envelope, credential.public_key, credential.algorithm
        )
        approval = statement.approval
        if approval.approver != credential.principal or event.get("principal") != approval.approver:
            raise VerificationError("passkey approval by someone else's credential")
        if approval.request_id != detail.get(f"{what}_id"):
            raise VerificationError(f"passkey approval logged for another {what}")
        expected = f"{what}.deny" if approval.decision == "deny" else f"{what}.approve"
        if event.get("action") != expected:
            raise VerificationError("passkey approval logged as another decision")
        digest = filed.get(approval.request_id)
        if digest is None:
            raise VerificationError(f"passkey approval of a {what} the log never filed")
        if digest != approval.request_digest:
            raise VerificationError(f"passkey approval signed other terms than the {what}'s")
        logged_at = parse_time(event.get("time"), "time")
        if not approval.issued_at - CLOCK_SKEW <= logged_at < approval.expires_at:
            raise VerificationError("passkey approval recorded outside its validity")
        self.checked += 1
