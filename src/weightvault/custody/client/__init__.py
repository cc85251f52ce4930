"""Client of the custody service, used by the ``weightvault vault`` commands.

:class:`VaultClient` wraps the service's HTTP API. Where the service and the token come from is
in :mod:`.config`; pulls (ranged, resumable downloads, all or nothing) in :mod:`.transfer`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from weightvault.custody.client import transfer
from weightvault.custody.client.config import (
    CONFIG_FILE,
    TOKEN_ENV,
    URL_ENV,
    ClientConfig,
    config_path,
    resolve_config,
    save_config,
)
from weightvault.custody.client.errors import TransferError, VaultHTTPError
from weightvault.errors import InputError, VerificationError

if TYPE_CHECKING:
    from weightvault.custody.approvals import RequestTerms

__all__ = [
    "CONFIG_FILE",
    "TOKEN_ENV",
    "URL_ENV",
    "ClientConfig",
    "Deciding",
    "TransferError",
    "VaultClient",
    "VaultHTTPError",
    "config_path",
    "resolve_config",
    "save_config",
]

_PIECE = 4 * 1024 * 1024


class Deciding(TypedDict, total=False):
    """How an approver decides (:meth:`VaultClient.decide`, :meth:`VaultClient.decide_job`)."""

    decision: str
    """``approve`` (the default) or ``deny``."""
    valid_for: dt.timedelta
    """How long the signed statement counts (an hour by default; the policy caps it)."""
    now: dt.datetime | None
    """When it is signed (now by default; tests fix the clock)."""
    announce: Callable[[str], None] | None
    """Receives one line saying exactly what is being signed (the CLI prints it), so an
    approver sees the terms their key vouches for."""


def _sign_decision(
    terms: RequestTerms, described: str, signer: Any, approver: str, how: Deciding
) -> bytes:
    """The DSSE envelope of ``approver``'s statement on exactly ``terms`` (``described`` to
    ``announce`` first), signed here: the key never leaves the approver's machine."""
    from weightvault.custody.approvals import ApprovalStatement, sign_statement

    decision = how.get("decision", "approve")
    announce = how.get("announce")
    if announce is not None:
        announce(f"signing {'an approval' if decision == 'approve' else 'a denial'} of {described}")
    statement = ApprovalStatement.for_request(
        terms,
        approver=approver,
        decision=decision,
        issued_at=how.get("now") or dt.datetime.now(dt.UTC),
        valid_for=how.get("valid_for", dt.timedelta(hours=1)),
    )
    return sign_statement(statement, signer)


def _envelope_body(envelope: bytes) -> dict[str, str]:
    return {"envelope": base64.b64encode(envelope).decode("ascii")}


class VaultClient(AbstractContextManager["VaultClient"]):
    """Thin typed wrapper over the service's HTTP API (``with`` closes its connections; the
    base class's ``__enter__`` gives the client itself)."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0) -> None:
        import httpx

        from weightvault.custody.client._tls import verified_context

        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=verified_context(),  # the process's, not a CA bundle loaded per client
        )

    def close(self) -> None:
        self._http.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The response (any status); a service out of reach is an input error, one line."""
        import httpx

        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach {self.config.url}: {exc}") from exc

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._decode(self._send(method, path, **kwargs))

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call the service answers with one JSON object."""
        result: dict[str, Any] = self._call(method, path, **kwargs)
        return result

    def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """A call the service answers with a JSON list of objects."""
        result: list[dict[str, Any]] = self._call(method, path, **kwargs)
        return result

    def _raw(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The body's exact bytes (a signed result, an export: never decoded and re-encoded)."""
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            self._decode(response)
        content: bytes = response.content
        return content

    @staticmethod
    def _decode(response: Any) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text[:200]
            raise VaultHTTPError(response.status_code, str(message))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    # -- identity and admin --------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._object("GET", "/v1/whoami")

    def create_principal(
        self,
        name: str,
        roles: list[str],
        *,
        recipient: str | None = None,
        approval_key_pem: str | None = None,
    ) -> dict[str, Any]:
        body = {"name": name, "roles": roles}
        if recipient:
            body["recipient"] = recipient
        if approval_key_pem:
            body["approval_key_pem"] = approval_key_pem
        return self._object("POST", "/v1/principals", json=body)

    def update_principal(self, name: str, **changes: Any) -> None:
        self._call("PATCH", f"/v1/principals/{name}", json=changes)

    def issue_token(self, name: str, label: str = "") -> dict[str, Any]:
        return self._object("POST", f"/v1/principals/{name}/tokens", json={"label": label})

    def revoke_token(self, token_id: str) -> None:
        self._call("DELETE", f"/v1/tokens/{token_id}")

    def create_model(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/models", json={"name": name, "policy": policy})

    def set_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        return self._object("PUT", f"/v1/models/{name}/policy", json={"policy": policy})

    def inventory(self) -> list[dict[str, Any]]:
        return self._list("GET", "/v1/inventory")

    def alerts(self) -> list[dict[str, Any]]:
        return self._list("GET", "/v1/alerts")

    # -- push ----------------------------------------------------------------------------------

    def push(
        self,
        model: str,
        version: str,
        model_path: Path,
        signature: bytes,
        *,
        ignore: tuple[Path, ...] = (),
    ) -> dict[str, Any]:
        """Upload a signed model tree (streamed; the server verifies, scans and encrypts it)."""
        from weightvault.tree import walk_model

        tree = walk_model(model_path, ignore_paths=ignore)
        single = tree.is_single_file
        files = [
            (model_path.name if single else entry.name, entry.path, entry.size)
            for entry in tree.files
        ]
        manifest = {
            "single_file": single,
            "signature": base64.b64encode(signature).decode("ascii"),
            "files": [{"path": name, "size": size} for name, _, size in files],
        }
        head = json.dumps(manifest).encode("utf-8") + b"\n"

        def body() -> Iterator[bytes]:
            yield head
            for _name, source, size in files:
                sent = 0
                with source.open("rb") as handle:
                    while True:
                        piece = handle.read(_PIECE)
                        if not piece:
                            break
                        sent += len(piece)
                        yield piece
                if sent != size:
                    raise InputError(f"{source}: changed size while being uploaded")

        total = len(head) + sum(size for _, _, size in files)
        return self._object(
            "POST",
            f"/v1/models/{model}/versions/{version}/upload",
            content=body(),
            headers={"Content-Length": str(total), "Content-Type": "application/octet-stream"},
            timeout=None,
        )

    # -- requests and approvals ----------------------------------------------------------------

    def request(
        self,
        model: str,
        version: str,
        justification: str,
        duration_s: int,
        byte_budget: int,
        purpose: str = "pull",
    ) -> dict[str, Any]:
        from weightvault.custody.approvals import AccessRequest

        asked = AccessRequest(model, version, justification, duration_s, byte_budget, purpose)
        return self._object("POST", "/v1/requests", json=asked.to_json())

    # -- release gates and the risk register ---------------------------------------------------

    def attach_attestation(self, model: str, version: str, data: bytes) -> dict[str, Any]:
        return self._object(
            "POST",
            f"/v1/models/{model}/versions/{version}/attestations",
            json={"attestation": base64.b64encode(data).decode("ascii")},
        )

    def list_attestations(self, model: str, version: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/v1/models/{model}/versions/{version}/attestations")

    def gate_check(self, model: str, version: str, purpose: str) -> dict[str, Any]:
        return self._object(
            "POST", f"/v1/models/{model}/versions/{version}/gate", json={"purpose": purpose}
        )

    def gate_override(
        self, model: str, version: str, purpose: str, shares: list[str], reason: str
    ) -> dict[str, Any]:
        return self._object(
            "POST",
            f"/v1/models/{model}/versions/{version}/gate/override",
            json={"purpose": purpose, "shares": shares, "reason": reason},
        )

    def add_risk(self, model: str, entry: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", f"/v1/models/{model}/risks", json={"entry": entry})

    def list_risks(self, model: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/v1/models/{model}/risks")

    def update_risk(self, model: str, risk_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._object(
            "PATCH", f"/v1/models/{model}/risks/{risk_id}", json={"changes": changes}
        )

    def close_risk(self, model: str, risk_id: str, reason: str) -> dict[str, Any]:
        return self._object(
            "POST", f"/v1/models/{model}/risks/{risk_id}/close", json={"reason": reason}
        )

    def get_request(self, request_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/requests/{request_id}")

    def console_link(
        self, proof: bytes | None = None, principal: str | None = None
    ) -> dict[str, Any]:
        """A one-time link (15 minutes) to register a passkey in the approver console.
        ``proof``: the request signed with one's approval key (``sign_enrolment``); an admin
        may ask for ``principal`` instead."""
        body = {
            "proof": base64.b64encode(proof).decode("ascii") if proof else "",
            "principal": principal or "",
        }
        return self._object("POST", "/v1/console/enrol", json=body)

    def passkeys(self) -> list[dict[str, Any]]:
        return self._list("GET", "/v1/console/passkeys")

    def revoke_passkey(self, key_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/console/passkeys/{key_id}/revoke")

    def list_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        return self._list("GET", "/v1/requests", params=params)

    def decide(
        self,
        request_id: str,
        signer: Any,
        *,
        approver: str,
        **how: Unpack[Deciding],
    ) -> dict[str, Any]:
        """Fetch the request, check what it asks, sign a statement for it locally, submit it
        (``how``: see :class:`Deciding`)."""
        from weightvault.custody.approvals import RequestTerms

        request = self.get_request(request_id)
        terms = RequestTerms.of_view(request)
        if terms.digest() != request.get("request_digest"):
            raise VerificationError("the server's request digest does not match its terms")
        return self.submit_envelope(
            request_id, _sign_decision(terms, terms.summary(), signer, approver, how)
        )

    def submit_envelope(self, request_id: str, envelope: bytes) -> dict[str, Any]:
        return self._object(
            "POST", f"/v1/requests/{request_id}/approvals", json=_envelope_body(envelope)
        )

    def revoke(self, request_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/requests/{request_id}/revoke")

    # -- jobs (structured access) ----------------------------------------------------------------

    def submit_job(self, job: dict[str, Any], justification: str) -> dict[str, Any]:
        """File a job (``model``, ``version``, ``kind``, ``parameters``, ``inputs``)."""
        return self._object("POST", "/v1/jobs", json={**job, "justification": justification})

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        return self._list("GET", "/v1/jobs", params=params)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/jobs/{job_id}/cancel")

    def job_result(self, job_id: str) -> bytes:
        """The job's signed result (released once; a second call is refused)."""
        return self._raw("POST", f"/v1/jobs/{job_id}/result")

    def decide_job(
        self,
        job_id: str,
        signer: Any,
        *,
        approver: str,
        **how: Unpack[Deciding],
    ) -> dict[str, Any]:
        """Fetch the job, recompute its request digest from the full request and the terms
        digest from that, then sign an approval (or denial) of exactly those terms."""
        from weightvault.access.spec import parse_job_request
        from weightvault.custody.approvals import RequestTerms

        job = self.get_job(job_id)
        request = parse_job_request(job["request"])
        if request.digest() != job["request_digest"]:
            raise VerificationError("the server's job digest does not match the job it shows")
        terms = RequestTerms(
            request_id=job["id"],
            model=request.model,
            version=request.version,
            grantee=job["requester"],
            justification=f"{request.kind} job {request.digest()}: {job['justification']}",
            duration_s=job["wall_s"],
            byte_budget=job["output_limit"],
        )
        if terms.digest() != job.get("terms_digest"):
            raise VerificationError("the server's terms digest does not match the job's terms")
        described = (
            f"{request.kind} job {job_id} on {request.model}@{request.version} for "
            f"{job['requester']}: parameters {json.dumps(request.parameters, sort_keys=True)}, "
            f"inputs {request.inputs_digest()}; justification: {job['justification']!r}"
        )
        envelope = _sign_decision(terms, described, signer, approver, how)
        return self._object("POST", f"/v1/jobs/{job_id}/approvals", json=_envelope_body(envelope))

    # -- pull ----------------------------------------------------------------------------------

    def grant_files(self, grant_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/grants/{grant_id}/files")

    # The pull is in :mod:`.transfer` (ranged, resumable downloads; all or nothing).
    download_file = transfer.download_file
    pull = transfer.pull_grant

    # -- audit ---------------------------------------------------------------------------------

    def audit_export(self) -> bytes:
        return self._raw("GET", "/v1/audit/export", timeout=None)

    def audit_key(self) -> dict[str, Any]:
        return self._object("GET", "/v1/audit/key")
