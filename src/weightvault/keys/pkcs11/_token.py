"""Loading PKCS#11 modules (once per process, one call at a time) and finding the token a URI
names."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightvault.errors import KeyMaterialError
from weightvault.keys.pkcs11._uri import DEFAULT_MODULE, MODULE_ENV, Pkcs11Uri


@dataclass
class _LoadedModule:
    lib: Any
    open_sessions: int = 0
    call_lock: threading.RLock = field(default_factory=threading.RLock)
    """python-pkcs11 initialises modules without locking callbacks, so the module may assume one
    thread at a time (SoftHSM2 then runs without mutexes): every call into it takes this lock."""
    logins: dict[int, _Login] = field(default_factory=dict)
    """PKCS#11 login state belongs to the application, not the session (a second ``C_Login``
    fails, and any ``C_Logout`` logs every session out), so each token is logged in once, by a
    session kept for that purpose while any :class:`Pkcs11Session` on it needs the login."""


@dataclass
class _Login:
    session: Any
    pin_digest: bytes
    users: int = 0


_MODULES: dict[str, _LoadedModule] = {}
_MODULES_LOCK = threading.Lock()


def _import_pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise KeyMaterialError(
            "PKCS#11 support is not installed",
            hint="pip install 'weightvault[pkcs11]'",
        ) from None
    return pkcs11


def _acquire_module(path: str) -> _LoadedModule:
    """Load (once per process) and initialise the module; re-initialise when nothing is open.

    Re-initialising when idle lets a process see tokens created after the module was first loaded
    (SoftHSM2 reads its configuration and token folder at ``C_Initialize``).
    """
    pkcs11 = _import_pkcs11()
    if not Path(path).is_file():
        raise KeyMaterialError(
            f"PKCS#11 module not found: {path}",
            hint=f"install it (e.g. apt-get install softhsm2), or set module-path or {MODULE_ENV}",
        )
    key = os.path.realpath(path)
    with _MODULES_LOCK:
        loaded = _MODULES.get(key)
        if loaded is None:
            try:
                loaded = _LoadedModule(lib=pkcs11.lib(key))
            except pkcs11.PKCS11Error as exc:
                raise KeyMaterialError(
                    f"PKCS#11 module {path} could not be loaded: {_describe_pkcs11_error(exc)}"
                ) from None
            _MODULES[key] = loaded
        elif loaded.open_sessions == 0:
            try:
                loaded.lib.reinitialize()
            except pkcs11.PKCS11Error as exc:
                raise KeyMaterialError(
                    f"PKCS#11 module {path} failed to initialise: {_describe_pkcs11_error(exc)}"
                ) from None
        loaded.open_sessions += 1
        return loaded


def _release_module(path: str) -> None:
    key = os.path.realpath(path)
    with _MODULES_LOCK:
        loaded = _MODULES.get(key)
        if loaded is not None and loaded.open_sessions > 0:
            loaded.open_sessions -= 1


def _describe_pkcs11_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _token_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip(" \x00")
    return str(value).rstrip(" \x00")


def _find_token(lib: Any, uri: Pkcs11Uri) -> Any:
    pkcs11 = _import_pkcs11()
    if uri.library_manufacturer is not None and lib.manufacturer_id != uri.library_manufacturer:
        raise KeyMaterialError(
            f"PKCS#11 module {lib.so} is from {lib.manufacturer_id!r}, "
            f"not library-manufacturer={uri.library_manufacturer!r}"
        )
    if uri.library_description is not None and lib.library_description != uri.library_description:
        raise KeyMaterialError(
            f"PKCS#11 module {lib.so} does not match library-description="
            f"{uri.library_description!r}"
        )
    if uri.library_version is not None:
        major, _, minor = uri.library_version.partition(".")
        wanted = (int(major), int(minor or "0"))
        if tuple(lib.library_version) != wanted:
            raise KeyMaterialError(
                f"PKCS#11 module {lib.so} has version {'.'.join(map(str, lib.library_version))},"
                f" not library-version={uri.library_version}"
            )
    matches = []
    labels = []
    try:
        slots = lib.get_slots(token_present=True)
        for slot in slots:
            if uri.slot_id is not None and slot.slot_id != uri.slot_id:
                continue
            if uri.slot_description is not None and slot.slot_description != uri.slot_description:
                continue
            if uri.slot_manufacturer is not None and slot.manufacturer_id != uri.slot_manufacturer:
                continue
            try:
                token = slot.get_token()
            except (pkcs11.exceptions.TokenNotPresent, pkcs11.exceptions.TokenNotRecognised):
                continue
            if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
                continue
            labels.append(_token_text(token.label))
            if uri.token is not None and _token_text(token.label) != uri.token:
                continue
            if uri.serial is not None and _token_text(token.serial) != uri.serial:
                continue
            if (
                uri.manufacturer is not None
                and _token_text(token.manufacturer_id) != uri.manufacturer
            ):
                continue
            if uri.model is not None and _token_text(token.model) != uri.model:
                continue
            matches.append(token)
    except pkcs11.PKCS11Error as exc:
        raise KeyMaterialError(
            f"PKCS#11 module {lib.so} failed to list tokens: {_describe_pkcs11_error(exc)}"
        ) from None
    if not matches:
        available = ", ".join(repr(label) for label in labels) or "none"
        raise KeyMaterialError(
            f"PKCS#11 token not found: {uri.describe_token()} (tokens present: {available})",
            hint="check token= in the URI (and SOFTHSM2_CONF for SoftHSM2)",
        )
    if len(matches) > 1:
        raise KeyMaterialError(
            f"PKCS#11 URI matches {len(matches)} tokens: {uri.describe_token()}",
            hint="add token=, serial= or slot-id= to the URI",
        )
    return matches[0]


def iter_module_tokens(module: str | None = None) -> Iterator[str]:
    """Labels of the tokens a module shows (for diagnostics and the test helper)."""
    path = module or os.environ.get(MODULE_ENV) or DEFAULT_MODULE
    loaded = _acquire_module(path)
    try:
        with loaded.call_lock:
            slots = loaded.lib.get_slots(token_present=True)
            labels = [_token_text(slot.get_token().label) for slot in slots]
    finally:
        _release_module(path)
    yield from labels
