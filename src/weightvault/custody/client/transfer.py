"""Pulling a grant's files: ranged, resumable downloads and the all-or-nothing pull.

Each file is downloaded to ``NAME.wvenc.part`` (a connection that breaks off is resumed by HTTP
range), and only when every ciphertext is there is each decrypted (with the grantee's X25519
identity) and checked against the registered SHA-256. A refusal, a wrong identity or an
interrupt leaves nothing; a broken connection leaves only the encrypted parts, and running the
same pull again resumes from them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from weightvault import _interrupt
from weightvault.custody._names import check_file_path
from weightvault.custody.client._tls import verified_context
from weightvault.custody.client.config import ClientConfig
from weightvault.custody.client.errors import TransferError, VaultHTTPError
from weightvault.errors import (
    DecryptionError,
    FileSystemError,
    InputError,
    PolicyError,
    VerificationError,
    WeightvaultError,
)

__all__ = ["GrantClient", "download_file", "pull_grant"]

_PIECE = 4 * 1024 * 1024


class GrantClient(Protocol):
    """What a pull needs from the client: where the service is, the grant's listing, who we
    are (:class:`~weightvault.custody.client.VaultClient` is one)."""

    config: ClientConfig

    def grant_files(self, grant_id: str) -> dict[str, Any]: ...

    def whoami(self) -> dict[str, Any]: ...


def download_file(
    client: GrantClient,
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
            _download_once(client.config, grant_id, index, target, expected_size, progress)
        except TransferError:
            if attempt == 2:
                raise
            continue
        return


def _download_once(
    config: ClientConfig,
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
    parsed = urllib.parse.urlsplit(config.url)
    connection: http.client.HTTPConnection
    if parsed.scheme == "https":  # trust what the API calls trust (one CA setting for both)
        connection = http.client.HTTPSConnection(
            parsed.hostname or "", parsed.port, timeout=120, context=verified_context()
        )
    else:
        connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=120)
    headers = {"Authorization": f"Bearer {config.token}"}
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


def pull_grant(
    client: GrantClient,
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
    listing = client.grant_files(grant_id)
    items = [(check_file_path(i["path"], "server file path"), i) for i in listing["files"]]
    if identity is not None:
        _check_identity(client, identity)
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
            download_file(
                client, grant_id, item["index"], part, item["delivered_size"], progress=progress
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


def _check_identity(client: GrantClient, identity: Any) -> None:
    """Refuse, before downloading, an identity that is not the grantee's recipient."""
    from weightvault.crypt.recipients import X25519Identity

    if not isinstance(identity, X25519Identity):
        return  # found out when the first file does not open (nothing is kept then either)
    mine = identity.recipient().to_string()
    registered = client.whoami().get("recipient")
    if registered and registered != mine:
        raise DecryptionError(
            f"this identity ({mine}) is not the X25519 recipient the grants are encrypted "
            f"to ({registered}); nothing was downloaded",
            hint="use the identity file whose recipient is registered for you",
        )


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
