"""Client of the custody service, used by the ``weightvault vault`` commands.

Server URL and token come from, in order: explicit arguments (command-line flags), the
environment (``WEIGHTVAULT_URL``, ``WEIGHTVAULT_TOKEN``), then ``$WEIGHTVAULT_HOME/vault.json``
(written by ``weightvault vault login``, mode 0600).

Pulls are all or nothing: each file is downloaded to ``NAME.wvenc.part`` (a connection that
breaks off is resumed by HTTP range), and only when every ciphertext is there is each decrypted
(with the grantee's X25519 identity) and checked against the registered SHA-256. A refusal, a
wrong identity or an interrupt leaves nothing; a broken connection leaves only the encrypted
parts, and running the same pull again resumes from them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightvault.errors import (
    DecryptionError,
    FileSystemError,
    InputError,
    PolicyError,
    UsageError,
    VerificationError,
    WeightvaultError,
)

__all__ = ["ClientConfig", "VaultClient", "VaultHTTPError", "config_path", "resolve_config"]

URL_ENV = "WEIGHTVAULT_URL"
TOKEN_ENV = "WEIGHTVAULT_TOKEN"  # noqa: S105 - the variable's name, not a token
CONFIG_FILE = "vault.json"
_PIECE = 4 * 1024 * 1024


class VaultHTTPError(PolicyError):
    """The service refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server refused ({status}): {message}")
        self.status = status
        if status >= 500 or status in (400, 404, 409, 413, 416, 422):
            self.exit_code = 2 if status < 500 else 1


def config_path() -> Path:
    from weightvault.crypt.recipients.keyring import weightvault_home

    return weightvault_home() / CONFIG_FILE


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str

    def __repr__(self) -> str:
        return f"ClientConfig(url={self.url!r})"


def resolve_config(url: str | None = None, token: str | None = None) -> ClientConfig:
    """Flags, then environment, then the config file."""
    url = url or os.environ.get(URL_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if not url or not token:
        path = config_path()
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: not a valid vault config ({exc})") from exc
            if isinstance(doc, dict):
                url = url or doc.get("url")
                token = token or doc.get("token")
    if not url:
        raise UsageError(
            "no server URL",
            hint="set WEIGHTVAULT_URL, or save one with a login",
            remedy="server-url",
        )
    if not token:
        raise UsageError(
            "no token",
            hint="set WEIGHTVAULT_TOKEN, or save one with a login",
            remedy="server-token",
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{url!r}: the server URL must start with http:// or https://")
    return ClientConfig(url.rstrip("/"), token)


def save_config(config: ClientConfig) -> Path:
    """Write ``vault.json`` (0600) under ``$WEIGHTVAULT_HOME``."""
    from weightvault.keys.files import write_secret_file

    path = config_path()
    write_secret_file(
        path, json.dumps({"url": config.url, "token": config.token}) + "\n", force=True
    )
    return path


class VaultClient:
    """Thin typed wrapper over the service's HTTP API."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0) -> None:
        import httpx

        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach {self.config.url}: {exc}") from exc
        return self._decode(response)

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
        result: dict[str, Any] = self._call("GET", "/v1/whoami")
        return result

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
        result: dict[str, Any] = self._call("POST", "/v1/principals", json=body)
        return result

    def update_principal(self, name: str, **changes: Any) -> None:
        self._call("PATCH", f"/v1/principals/{name}", json=changes)

    def issue_token(self, name: str, label: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/v1/principals/{name}/tokens", json={"label": label}
        )
        return result

    def revoke_token(self, token_id: str) -> None:
        self._call("DELETE", f"/v1/tokens/{token_id}")

    def create_model(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/v1/models", json={"name": name, "policy": policy}
        )
        return result

    def set_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT", f"/v1/models/{name}/policy", json={"policy": policy}
        )
        return result

    def inventory(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/inventory")
        return result

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/alerts")
        return result

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
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/models/{model}/versions/{version}/upload",
            content=body(),
            headers={"Content-Length": str(total), "Content-Type": "application/octet-stream"},
            timeout=None,
        )
        return result

    # -- requests and approvals ----------------------------------------------------------------

    def request(
        self, model: str, version: str, justification: str, duration_s: int, byte_budget: int
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST",
            "/v1/requests",
            json={
                "model": model,
                "version": version,
                "justification": justification,
                "duration_s": duration_s,
                "byte_budget": byte_budget,
            },
        )
        return result

    def get_request(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/requests/{request_id}")
        return result

    def list_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        result: list[dict[str, Any]] = self._call("GET", "/v1/requests", params=params)
        return result

    def decide(
        self,
        request_id: str,
        signer: Any,
        *,
        approver: str,
        decision: str = "approve",
        valid_for: dt.timedelta = dt.timedelta(hours=1),
        now: dt.datetime | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Fetch the request, check what it asks, sign a statement for it locally, submit it.

        ``announce`` receives a one-line description of exactly what is being signed (the CLI
        prints it), so an approver sees the terms their key vouches for.
        """
        from weightvault.custody.approvals import ApprovalStatement, RequestTerms, sign_statement

        request = self.get_request(request_id)
        terms = RequestTerms(
            request_id=request["id"],
            model=request["model"],
            version=request["version"],
            grantee=request["requester"],
            justification=request["justification"],
            duration_s=request["duration_s"],
            byte_budget=request["byte_budget"],
        )
        if terms.digest() != request.get("request_digest"):
            raise VerificationError("the server's request digest does not match its terms")
        if announce is not None:
            announce(
                f"signing {'an approval' if decision == 'approve' else 'a denial'} of request "
                f"{terms.request_id}: {terms.model}@"
                f"{terms.version} for {terms.grantee}, {terms.duration_s} s, "
                f"{terms.byte_budget} bytes; justification: {terms.justification!r}"
            )
        statement = ApprovalStatement.for_request(
            terms,
            approver=approver,
            decision=decision,
            issued_at=now or dt.datetime.now(dt.UTC),
            valid_for=valid_for,
        )
        envelope = sign_statement(statement, signer)
        return self.submit_envelope(request_id, envelope)

    def submit_envelope(self, request_id: str, envelope: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/requests/{request_id}/approvals",
            json={"envelope": base64.b64encode(envelope).decode("ascii")},
        )
        return result

    def revoke(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/requests/{request_id}/revoke")
        return result

    # -- pull ----------------------------------------------------------------------------------

    def grant_files(self, grant_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/grants/{grant_id}/files")
        return result

    def download_file(
        self,
        grant_id: str,
        index: int,
        target: Path,
        expected_size: int,
        *,
        progress: Callable[[int], None] = lambda _n: None,
    ) -> None:
        """Download one delivered (encrypted) file to ``target``, resuming a partial one.

        The bulk transfer uses the standard library's HTTP client reading straight into one
        preallocated buffer: several times faster than a chunk-iterating client. A connection
        that breaks off is resumed once, from where it stopped: a server that stopped sending
        because a budget ran out then says so (:class:`VaultHTTPError`), instead of the pull
        reporting a broken transfer. Transport failures raise :class:`TransferError`.
        """
        for attempt in (1, 2):
            try:
                self._download_once(grant_id, index, target, expected_size, progress)
            except TransferError:
                if attempt == 2:
                    raise
                continue
            return

    def _download_once(
        self,
        grant_id: str,
        index: int,
        target: Path,
        expected_size: int,
        progress: Callable[[int], None],
    ) -> None:
        import http.client
        import urllib.parse

        have = target.stat().st_size if target.exists() else 0
        if have > expected_size:
            target.unlink()
            have = 0
        if have == expected_size:
            return
        parsed = urllib.parse.urlsplit(self.config.url)
        connection_class = (
            http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parsed.hostname or "", parsed.port, timeout=120)
        headers = {"Authorization": f"Bearer {self.config.token}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        path = f"{parsed.path.rstrip('/')}/v1/grants/{grant_id}/files/{index}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status >= 400:
                body = response.read(65536)
                try:
                    message = json.loads(body).get("error", "")
                except ValueError:
                    message = body[:200].decode("utf-8", "replace")
                raise VaultHTTPError(response.status, str(message))
            if have and response.status != 206:
                raise VerificationError("server ignored the range request; retry the pull")
            buffer = bytearray(_PIECE)
            view = memoryview(buffer)
            out = target.open("ab")
            try:
                while True:
                    count = response.readinto(view)
                    if not count:
                        break
                    try:
                        out.write(view[:count])
                    except OSError as exc:  # the local disk (full...), not the connection
                        raise FileSystemError.from_os_error(exc, target, writing=True) from exc
                    progress(count)
                try:
                    out.close()
                except OSError as exc:
                    raise FileSystemError.from_os_error(exc, target, writing=True) from exc
            finally:
                if not out.closed:
                    with contextlib.suppress(OSError):
                        out.close()
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(f"transfer of file {index} broke off ({exc})") from exc
        finally:
            connection.close()
        if target.stat().st_size != expected_size:
            raise TransferError(f"transfer of file {index} stopped before its end")

    def pull(
        self,
        grant_id: str,
        output: Path,
        identity: Any | None,
        *,
        progress: Callable[[int], None] = lambda _n: None,
    ) -> dict[str, Any]:
        """Pull every file of a grant into ``output``; decrypt unless ``identity`` is None.

        All or nothing. The identity is checked against the grantee's recipient and the grant's
        byte budget against the download's size before anything is fetched. Every file is
        downloaded (``NAME.wvenc.part``, then ``NAME.wvenc``) before any is decrypted; each
        plaintext gets its name only once it decrypted completely and matched its registered
        SHA-256. A refusal, a wrong identity, a digest mismatch or an interrupt (SIGINT,
        SIGTERM) removes every file and folder this pull created, ciphertext included. Only a
        broken connection keeps the encrypted downloads (never plaintext), so that running the
        same pull again resumes where it stopped instead of spending the budget twice.
        """
        from weightvault import _interrupt
        from weightvault.custody._names import check_file_path

        listing = self.grant_files(grant_id)
        items = [(check_file_path(i["path"], "server file path"), i) for i in listing["files"]]
        if identity is not None:
            self._check_identity(identity)
        plan = []
        for name, item in items:
            encrypted = output / f"{name}.wvenc"
            part = encrypted.with_name(encrypted.name + ".part")
            plan.append((name, item, encrypted, part))
        missing = sum(
            0 if encrypted.exists() else item["delivered_size"] - _size_or_zero(part)
            for _name, item, encrypted, part in plan
        )
        remaining = listing.get("bytes_remaining")
        if isinstance(remaining, int) and missing > remaining:
            raise PolicyError(
                f"pull refused: the grant's byte budget is exhausted ({remaining} bytes left, "
                f"{missing} needed); nothing was downloaded"
            )
        created = _Created()
        try:
            created.folder(output)
            for _name, item, encrypted, part in plan:
                created.folder(encrypted.parent)
                if encrypted.exists():
                    continue
                created.file(part)
                self.download_file(
                    grant_id, item["index"], part, item["delivered_size"], progress=progress
                )
                with _interrupt.deferred():
                    created.file(encrypted)
                    os.replace(part, encrypted)
                    _interrupt.record_created(encrypted)
            results = []
            for name, item, encrypted, _part in plan:
                if identity is None:
                    results.append({"path": f"{name}.wvenc", "size": encrypted.stat().st_size})
                    continue
                plain = output / name
                created.file(plain)
                _decrypt_checked(encrypted, plain, identity, item["sha256"])
            if identity is not None:
                for name, item, encrypted, _part in plan:
                    encrypted.unlink()
                    results.append({"path": name, "size": item["size"], "sha256": item["sha256"]})
        except TransferError as exc:
            created.remove(keep=lambda path: path.name.endswith((".wvenc", ".wvenc.part")))
            raise InputError(
                f"{exc.message}; the encrypted parts downloaded so far are kept in {output} "
                "(no plaintext): run the same pull again to resume"
            ) from exc
        except BaseException as exc:
            created.remove()
            if isinstance(exc, WeightvaultError):
                exc.message = f"{exc.message}; nothing was kept"
            raise
        return {"grant_id": grant_id, "model": listing["model"], "files": results}

    def _check_identity(self, identity: Any) -> None:
        """Refuse, before downloading, an identity that is not the grantee's recipient."""
        from weightvault.crypt.recipients import X25519Identity

        if not isinstance(identity, X25519Identity):
            return  # found out when the first file does not open (nothing is kept then either)
        mine = identity.recipient().to_string()
        registered = self.whoami().get("recipient")
        if registered and registered != mine:
            raise DecryptionError(
                f"this identity ({mine}) is not the X25519 recipient the grants are encrypted "
                f"to ({registered}); nothing was downloaded",
                hint="use the identity file whose recipient is registered for you",
            )

    # -- audit ---------------------------------------------------------------------------------

    def audit_export(self) -> bytes:
        import httpx

        try:
            response = self._http.get("/v1/audit/export", timeout=None)
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach {self.config.url}: {exc}") from exc
        if response.status_code >= 400:
            self._decode(response)
        content: bytes = response.content
        return content

    def audit_key(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/audit/key")
        return result


class TransferError(InputError):
    """The connection to the service broke off during a download."""


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class _Created:
    """What a pull created, to remove it again (files first, then folders, newest first).

    Each name is recorded before the step that creates it, so an interrupt cannot fall between
    the creation and the record; removing a name that never came to exist is harmless.
    """

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.folders: list[Path] = []

    def file(self, path: Path) -> None:
        if not path.exists() and path not in self.files:
            self.files.append(path)

    def folder(self, path: Path) -> None:
        from weightvault import _interrupt

        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            with _interrupt.deferred():
                folder.mkdir(exist_ok=True)
                self.folders.append(folder)
                _interrupt.record_created(folder)

    def remove(self, keep: Callable[[Path], bool] = lambda _p: False) -> None:
        kept = False
        for path in reversed(self.files):
            if keep(path) and path.exists():
                kept = True
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if kept:
            return
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _decrypt_checked(encrypted: Path, plain: Path, identity: Any, sha256: str) -> None:
    """Decrypt ``encrypted`` to ``plain``; the plaintext is named only once its SHA-256 matched
    ``sha256`` (until then it is an unnamed file: nothing to remove after a failure)."""
    from weightvault.crypt import decrypt_file

    decrypt_file(encrypted, plain, [identity], force=True, expected_sha256=sha256)
