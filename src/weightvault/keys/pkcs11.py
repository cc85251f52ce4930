"""PKCS#11 tokens: RFC 7512 URIs, sessions, and the operations other capabilities need.

Keys never leave the token. This module signs (ECDSA P-256/P-384/P-521 over a hash computed here,
Ed25519 with ``CKM_EDDSA``), wraps and unwraps secrets under a non-extractable AES key-encryption
key (``CKM_AES_KEY_WRAP`` = RFC 3394, ``CKM_AES_KEY_WRAP_PAD`` = RFC 5649), reads public keys, and
generates keys on the token (EC, Ed25519, AES key-encryption keys; private parts never extractable).

A key is named by a PKCS#11 URI (RFC 7512), for example::

    pkcs11:token=models;object=release-signing;type=private?pin-source=file:/run/secrets/pin

* The PIN comes from, in order: the ``pin`` argument, ``pin-value``, ``pin-source`` (a file path
  or ``file:`` URI; running programs with ``|cmd`` is refused), the ``WEIGHTVAULT_PKCS11_PIN``
  environment variable. PINs never appear in messages, logs or ``repr``.
* The module comes from ``module-path`` (a file, or a folder plus ``module-name``), then the
  ``WEIGHTVAULT_PKCS11_MODULE`` environment variable, then SoftHSM2's
  ``/usr/lib/softhsm/libsofthsm2.so``.

Every failure is a :class:`~weightvault.errors.KeyMaterialError` with one line saying what is
wrong (module missing, token not found, wrong PIN, key not found, key of the wrong type), except
a failed unwrap, which is a :class:`~weightvault.errors.DecryptionError` whatever the cause
(wrong key-encryption key and tampered blob look the same).

One operation opens one session (about 1 ms on SoftHSM2); hold a :class:`Pkcs11Session` open to
batch many. Sessions are not shared between threads.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from weightvault.errors import DecryptionError, KeyMaterialError

__all__ = [
    "DEFAULT_MODULE",
    "MODULE_ENV",
    "PIN_ENV",
    "KeyKind",
    "Pkcs11Session",
    "Pkcs11Uri",
    "load_public_key",
    "redacted_uri",
    "sign_ecdsa",
    "sign_ed25519",
    "unwrap_key",
    "wrap_key",
]

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
"""SoftHSM2's module as Debian installs it."""
MODULE_ENV = "WEIGHTVAULT_PKCS11_MODULE"
PIN_ENV = "WEIGHTVAULT_PKCS11_PIN"

_MAX_URI_LENGTH = 4096
_MAX_PIN_FILE_BYTES = 1024
_MODULE_SEARCH_DIRS = (
    "/usr/lib/softhsm",
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/local/lib/softhsm",
    "/usr/local/lib",
)

# RFC 7512 section 2.3: path attributes (";"-separated) and query attributes ("&"-separated).
_PATH_ATTRIBUTES = (
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "object",
    "type",
    "id",
    "slot-manufacturer",
    "slot-description",
    "slot-id",
)
_QUERY_ATTRIBUTES = ("pin-source", "pin-value", "module-name", "module-path")
_OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")
_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN_CHARS_RE = re.compile(r"[\x00-\x20\x7f#\"<>\\^`{}]")
_LIBRARY_VERSION_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3})?")

# DER encodings of the EC_PARAMS this module accepts (named curves only).
_EC_PARAMS_P256 = bytes.fromhex("06082a8648ce3d030107")
_EC_PARAMS_P384 = bytes.fromhex("06052b81040022")
_EC_PARAMS_P521 = bytes.fromhex("06052b81040023")
_EC_PARAMS_ED25519_OID = bytes.fromhex("06032b6570")
_EC_PARAMS_ED25519_NAME = b"\x13\x0cedwards25519"


class KeyKind(enum.Enum):
    """The kinds of key this module knows how to use."""

    EC_P256 = "EC P-256"
    EC_P384 = "EC P-384"
    EC_P521 = "EC P-521"
    ED25519 = "Ed25519"
    AES = "AES"
    OTHER = "other"

    @property
    def is_ecdsa(self) -> bool:
        return self in (KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.EC_P521)


_ECDSA_CURVES: dict[KeyKind, tuple[ec.EllipticCurve, str]] = {
    KeyKind.EC_P256: (ec.SECP256R1(), "sha256"),
    KeyKind.EC_P384: (ec.SECP384R1(), "sha384"),
    KeyKind.EC_P521: (ec.SECP521R1(), "sha512"),
}


def _uri_error(attribute: str, problem: str) -> KeyMaterialError:
    return KeyMaterialError(
        f"PKCS#11 URI attribute {attribute!r}: {problem}",
        hint="see RFC 7512, e.g. pkcs11:token=NAME;object=LABEL;type=private",
    )


def _decode_value(attribute: str, raw: str) -> bytes:
    if raw == "":
        raise _uri_error(attribute, "empty value")
    if _PERCENT_RE.search(raw):
        raise _uri_error(attribute, "malformed percent-encoding")
    if _FORBIDDEN_CHARS_RE.search(raw):
        raise _uri_error(attribute, "contains a character that must be percent-encoded")
    return urllib.parse.unquote_to_bytes(raw)


def _decode_text(attribute: str, raw: str) -> str:
    value = _decode_value(attribute, raw)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _uri_error(attribute, "not UTF-8 after percent-decoding") from None
    if "\x00" in text:
        raise _uri_error(attribute, "contains a NUL character")
    return text


def _encode(value: str | bytes, *, all_bytes: bool = False) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if all_bytes:
        return "".join(f"%{b:02x}" for b in data)
    return urllib.parse.quote_from_bytes(data, safe="")


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 PKCS#11 URI naming a token and (optionally) one object on it.

    Parse with :meth:`parse`; :meth:`format` writes it back (without the PIN unless asked);
    ``str()`` is the PIN-free form, safe for messages.
    """

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    slot_manufacturer: str | None = None
    slot_description: str | None = None
    slot_id: int | None = None
    pin_value: str | None = field(default=None, repr=False)
    pin_source: str | None = None
    module_name: str | None = None
    module_path: str | None = None

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in _OBJECT_TYPES:
            raise _uri_error("type", f"must be one of {', '.join(_OBJECT_TYPES)}")
        if self.pin_value is not None and self.pin_source is not None:
            raise _uri_error("pin-value", "give either pin-value or pin-source, not both")
        if self.slot_id is not None and self.slot_id < 0:
            raise _uri_error("slot-id", "must be a non-negative decimal number")

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """Parse ``pkcs11:PATH[?QUERY]`` strictly: unknown or repeated attributes are errors."""
        if not isinstance(text, str):
            raise TypeError("PKCS#11 URI must be a str")
        if len(text) > _MAX_URI_LENGTH:
            raise KeyMaterialError(f"PKCS#11 URI longer than {_MAX_URI_LENGTH} characters")
        scheme, sep, rest = text.partition(":")
        if not sep or scheme.lower() != "pkcs11":
            raise KeyMaterialError(
                "not a PKCS#11 URI: it must start with 'pkcs11:'",
                hint="e.g. pkcs11:token=NAME;object=LABEL",
            )
        if "#" in rest:
            raise _uri_error("#", "fragments are not allowed in PKCS#11 URIs")
        path, _, query = rest.partition("?")
        values: dict[str, str] = {}
        for part, separator, allowed in (
            (path, ";", _PATH_ATTRIBUTES),
            (query, "&", _QUERY_ATTRIBUTES),
        ):
            if part == "":
                continue
            for item in part.split(separator):
                name, eq, raw = item.partition("=")
                if not eq:
                    raise _uri_error(name or item, "expected NAME=VALUE")
                name = name.lower()
                if name not in allowed:
                    where = "path" if separator == ";" else "query"
                    other = _QUERY_ATTRIBUTES if separator == ";" else _PATH_ATTRIBUTES
                    if name in other:
                        raise _uri_error(
                            name, f"belongs in the {'query' if where == 'path' else 'path'} part"
                        )
                    raise _uri_error(name, "unknown or unsupported attribute")
                if name in values:
                    raise _uri_error(name, "given more than once")
                values[name] = raw

        kwargs: dict[str, Any] = {}
        for name, raw in values.items():
            key = name.replace("-", "_")
            if name == "id":
                kwargs[key] = _decode_value(name, raw)
            elif name == "slot-id":
                text_value = _decode_text(name, raw)
                if not text_value.isascii() or not text_value.isdigit():
                    raise _uri_error(name, "must be a non-negative decimal number")
                kwargs[key] = int(text_value)
            elif name == "library-version":
                text_value = _decode_text(name, raw)
                if not _LIBRARY_VERSION_RE.fullmatch(text_value):
                    raise _uri_error(name, "must be MAJOR or MAJOR.MINOR")
                kwargs[key] = text_value
            else:
                kwargs[key] = _decode_text(name, raw)
        return cls(**kwargs)

    def format(self, *, include_pin: bool = False) -> str:
        """Write the URI back in RFC 7512 form; the PIN is left out unless ``include_pin``."""
        path: list[str] = []
        for name in _PATH_ATTRIBUTES:
            value = getattr(self, name.replace("-", "_"))
            if value is None:
                continue
            if name == "id":
                path.append(f"id={_encode(value, all_bytes=True)}")
            else:
                path.append(f"{name}={_encode(str(value))}")
        query: list[str] = []
        for name in _QUERY_ATTRIBUTES:
            value = getattr(self, name.replace("-", "_"))
            if value is None or (name == "pin-value" and not include_pin):
                continue
            query.append(f"{name}={_encode(value)}")
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")

    def __str__(self) -> str:
        return self.format(include_pin=False)

    def describe_object(self) -> str:
        """A short description of the object the URI names, for messages."""
        parts = []
        if self.object is not None:
            parts.append(f"object={self.object!r}")
        if self.id is not None:
            parts.append(f"id={self.id.hex()}")
        if self.type is not None:
            parts.append(f"type={self.type}")
        return ", ".join(parts) if parts else "(any object)"

    def describe_token(self) -> str:
        parts = []
        for name in ("token", "serial", "manufacturer", "model", "slot_id"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name.replace('_', '-')}={value!r}")
        return ", ".join(parts) if parts else "(any token)"

    def resolve_module(self) -> str:
        """The module file to load: ``module-path``/``module-name``, then the env, then SoftHSM2."""
        if self.module_path is not None:
            path = Path(self.module_path)
            if path.is_dir():
                if self.module_name is None:
                    raise _uri_error("module-path", "names a folder; add module-name")
                for candidate in (f"{self.module_name}.so", f"lib{self.module_name}.so"):
                    if (path / candidate).is_file():
                        return str(path / candidate)
                raise KeyMaterialError(
                    f"PKCS#11 module {self.module_name!r} not found in {path}",
                    hint="check module-path / module-name in the URI",
                )
            return str(path)
        if self.module_name is not None:
            for folder in _MODULE_SEARCH_DIRS:
                for candidate in (f"{self.module_name}.so", f"lib{self.module_name}.so"):
                    if Path(folder, candidate).is_file():
                        return str(Path(folder, candidate))
            raise KeyMaterialError(
                f"PKCS#11 module {self.module_name!r} not found in the standard folders",
                hint="give module-path in the URI or set " + MODULE_ENV,
            )
        return os.environ.get(MODULE_ENV) or DEFAULT_MODULE

    def resolve_pin(self, pin: str | None = None) -> str | None:
        """The PIN to log in with, or None when none was given anywhere."""
        if pin is not None:
            return pin
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is not None:
            return _read_pin_source(self.pin_source)
        env_pin = os.environ.get(PIN_ENV)
        return env_pin if env_pin else None


def redacted_uri(text: str) -> str:
    """``text`` as a PKCS#11 URI safe to print: the PIN removed, or a placeholder if unparsable.

    Use it wherever a user-supplied URI goes into a message or log line.
    """
    try:
        return str(Pkcs11Uri.parse(text))
    except (KeyMaterialError, TypeError):
        return "pkcs11:<malformed URI>"


def _read_pin_source(source: str) -> str:
    if source.startswith("|"):
        raise _uri_error("pin-source", "running a program for the PIN is not supported; use a file")
    if source.startswith("file:"):
        parsed = urllib.parse.urlsplit(source)
        if parsed.netloc not in ("", "localhost"):
            raise _uri_error("pin-source", "only local file: URIs are supported")
        path = Path(urllib.parse.unquote(parsed.path))
    elif "://" in source:
        raise _uri_error("pin-source", "only file paths and file: URIs are supported")
    else:
        path = Path(source)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_PIN_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyMaterialError(
            f"PKCS#11 pin-source file {str(path)!r} cannot be read: {exc.strerror or exc}"
        ) from None
    if len(data) > _MAX_PIN_FILE_BYTES:
        raise KeyMaterialError(f"PKCS#11 pin-source file {str(path)!r} is too large to be a PIN")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyMaterialError(f"PKCS#11 pin-source file {str(path)!r} is not UTF-8") from None
    pin = text.splitlines()[0] if text else ""
    if not pin:
        raise KeyMaterialError(f"PKCS#11 pin-source file {str(path)!r} is empty")
    return pin


# --- module loading -------------------------------------------------------------------------------


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


def _key_kind(key: Any) -> KeyKind:
    pkcs11 = _import_pkcs11()
    key_type = key.key_type
    if key_type == pkcs11.KeyType.AES:
        return KeyKind.AES
    if key_type in (pkcs11.KeyType.EC, pkcs11.KeyType.EC_EDWARDS):
        try:
            params = bytes(key[pkcs11.Attribute.EC_PARAMS])
        except pkcs11.PKCS11Error:
            return KeyKind.OTHER
        return {
            _EC_PARAMS_P256: KeyKind.EC_P256,
            _EC_PARAMS_P384: KeyKind.EC_P384,
            _EC_PARAMS_P521: KeyKind.EC_P521,
            _EC_PARAMS_ED25519_OID: KeyKind.ED25519,
            _EC_PARAMS_ED25519_NAME: KeyKind.ED25519,
        }.get(params, KeyKind.OTHER)
    return KeyKind.OTHER


def _describe_key_type(key: Any) -> str:
    kind = _key_kind(key)
    if kind is not KeyKind.OTHER:
        return f"an {kind.value} key" if kind.value[0] in "AE" else f"a {kind.value} key"
    name = getattr(key.key_type, "name", str(key.key_type))
    return f"a {name} key"


_CLASS_FOR_TYPE = {
    "public": "PUBLIC_KEY",
    "private": "PRIVATE_KEY",
    "secret-key": "SECRET_KEY",
    "cert": "CERTIFICATE",
    "data": "DATA",
}
_TYPE_FOR_CLASS = {value: key for key, value in _CLASS_FOR_TYPE.items()}
_ARTICLE_NAME = {
    "public": "a public key",
    "private": "a private key",
    "secret-key": "a secret key",
    "cert": "a certificate",
    "data": "a data object",
}


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run a session method under its module's call lock (see :class:`_LoadedModule`)."""

    @functools.wraps(method)
    def wrapper(self: Pkcs11Session, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise ValueError("PKCS#11 session is closed")
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class Pkcs11Session:
    """An open (and, with a PIN, logged-in) session on the token a URI names.

    Use as a context manager; every operation works on the object the URI names.
    """

    def __init__(self, uri: Pkcs11Uri | str, *, pin: str | None = None, rw: bool = False) -> None:
        self.uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        self._module_path = self.uri.resolve_module()
        self._pkcs11 = _import_pkcs11()
        loaded = _acquire_module(self._module_path)
        self._lock = loaded.call_lock
        self._closed = False
        self._found: dict[str, Any] = {}
        try:
            with self._lock:
                self._token = _find_token(loaded.lib, self.uri)
                self.token_label = _token_text(self._token.label)
                resolved_pin = self.uri.resolve_pin(pin)
                self._slot_id = self._token.slot.slot_id
                self._logins = loaded.logins
                self._login = None if resolved_pin is None else self._log_in(resolved_pin)
                try:
                    # A session of its own, without login: python-pkcs11 logs out on closing a
                    # session it logged in, which would log out every other session too.
                    self._session = self._token.open(rw=rw)
                except self._pkcs11.PKCS11Error as exc:
                    self._log_out()
                    raise KeyMaterialError(
                        f"PKCS#11 token {self.token_label!r}: cannot open a session: "
                        f"{_describe_pkcs11_error(exc)}"
                    ) from None
            self.logged_in = resolved_pin is not None
        except BaseException:
            _release_module(self._module_path)
            self._closed = True
            raise

    def _log_in(self, pin: str) -> _Login:
        pin_digest = hashlib.sha256(pin.encode("utf-8")).digest()
        login = self._logins.get(self._slot_id)
        if login is not None:
            # The token has one user PIN and it is already logged in with it: any other PIN is
            # wrong, and accepting it would let a caller ride on someone else's login.
            if not hmac.compare_digest(login.pin_digest, pin_digest):
                raise self._wrong_pin()
            login.users += 1
            return login
        login = _Login(session=self._login_session(pin), pin_digest=pin_digest, users=1)
        self._logins[self._slot_id] = login
        return login

    def _log_out(self) -> None:
        login = self._login
        self._login = None
        if login is None:
            return
        login.users -= 1
        if login.users == 0:
            self._logins.pop(self._slot_id, None)
            try:
                login.session.close()  # C_Logout + C_CloseSession
            except self._pkcs11.PKCS11Error:
                pass

    def _wrong_pin(self) -> KeyMaterialError:
        return KeyMaterialError(
            f"PKCS#11 login to token {self.token_label!r} failed: wrong PIN",
            hint=f"check pin-value / pin-source in the URI or {PIN_ENV}",
        )

    def _login_session(self, pin: str) -> Any:
        exc_mod = self._pkcs11.exceptions
        try:
            return self._token.open(user_pin=pin)
        except (exc_mod.PinIncorrect, exc_mod.PinInvalid, exc_mod.PinLenRange):
            raise self._wrong_pin() from None
        except exc_mod.PinLocked:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: the user PIN is locked",
                hint="unlock it with the security officer PIN",
            ) from None
        except (exc_mod.PinExpired, exc_mod.UserPinNotInitialized):
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: the user PIN is expired or not initialised"
            ) from None
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: cannot open a session: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                try:
                    self._session.close()
                except self._pkcs11.PKCS11Error:
                    pass
                self._log_out()
        finally:
            _release_module(self._module_path)

    def __enter__(self) -> Pkcs11Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Session({str(self.uri)!r})"

    # --- object lookup ----------------------------------------------------------------------------

    def _objects(self, object_class: str | None) -> list[Any]:
        attrs: dict[Any, Any] = {}
        attribute = self._pkcs11.Attribute
        if object_class is not None:
            attrs[attribute.CLASS] = getattr(self._pkcs11.ObjectClass, object_class)
        if self.uri.object is not None:
            attrs[attribute.LABEL] = self.uri.object
        if self.uri.id is not None:
            attrs[attribute.ID] = self.uri.id
        try:
            return list(self._session.get_objects(attrs))
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: object search failed: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None

    @_locked
    def find_key(self, object_class: str, *, purpose: str) -> Any:
        """The single object of ``object_class`` (``PRIVATE_KEY``, ``PUBLIC_KEY``, ``SECRET_KEY``)
        the URI names; errors say whether nothing, something of another class, or several match.
        """
        cached = self._found.get(object_class)
        if cached is not None:
            return cached
        wanted_type = _TYPE_FOR_CLASS[object_class]
        if (
            self.uri.type is not None
            and self.uri.type != wanted_type
            and not (object_class == "PUBLIC_KEY" and self.uri.type == "private")
        ):
            raise KeyMaterialError(
                f"PKCS#11 URI names type={self.uri.type}, but {purpose} needs "
                f"{_ARTICLE_NAME[wanted_type]}",
                hint=f"use type={wanted_type} (or leave type out)",
            )
        if self.uri.object is None and self.uri.id is None:
            raise KeyMaterialError(
                f"PKCS#11 URI {self.uri} names no key",
                hint="add object=LABEL and/or id=%XX to the URI",
            )
        found = self._objects(object_class)
        if not found:
            others = self._objects(None)
            if others and (self.logged_in or object_class == "PUBLIC_KEY"):
                classes = sorted(
                    {
                        _TYPE_FOR_CLASS.get(obj.object_class.name, obj.object_class.name)
                        for obj in others
                    }
                )
                raise KeyMaterialError(
                    f"PKCS#11 token {self.token_label!r}: {self.uri.describe_object()} is a "
                    f"{'/'.join(classes)} object, but {purpose} needs {_ARTICLE_NAME[wanted_type]}",
                    hint="point the URI at the right object",
                )
            login_hint = (
                "" if self.logged_in else " (no PIN was given, so private objects are hidden)"
            )
            raise KeyMaterialError(
                f"PKCS#11 key not found on token {self.token_label!r}: "
                f"{self.uri.describe_object()}{login_hint}",
                hint="list the objects: pkcs11-tool --module MODULE --login --list-objects",
            )
        if len(found) > 1:
            raise KeyMaterialError(
                f"PKCS#11 URI matches {len(found)} {wanted_type} keys on token "
                f"{self.token_label!r}: {self.uri.describe_object()}",
                hint="add id= to the URI to pick one",
            )
        self._found[object_class] = found[0]
        return found[0]

    @_locked
    def key_kind(self) -> KeyKind:
        """The kind of the private (or, with ``type=secret-key``, secret) key the URI names."""
        self._require_login("reading the key's type")
        if self.uri.type == "secret-key":
            return _key_kind(self.find_key("SECRET_KEY", purpose="this operation"))
        return _key_kind(self.find_key("PRIVATE_KEY", purpose="signing"))

    # --- operations -------------------------------------------------------------------------------

    @_locked
    def public_key(self) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
        """Read the public key (EC or Ed25519) stored beside the private key the URI names."""
        key = self.find_key("PUBLIC_KEY", purpose="reading the public key")
        kind = _key_kind(key)
        attribute = self._pkcs11.Attribute
        try:
            point = bytes(key[attribute.EC_POINT])
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: cannot read the public key "
                f"{self.uri.describe_object()}: {_describe_pkcs11_error(exc)}"
            ) from None
        point = _unwrap_octet_string(point)
        try:
            if kind.is_ecdsa:
                curve = _ECDSA_CURVES[kind][0]
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            if kind is KeyKind.ED25519:
                return ed25519.Ed25519PublicKey.from_public_bytes(point)
        except ValueError:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: the public key "
                f"{self.uri.describe_object()} is not a valid {kind.value} point"
            ) from None
        raise KeyMaterialError(
            f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
            f"{_describe_key_type(key)}; only EC P-256/P-384/P-521 and Ed25519 public keys "
            "are supported"
        )

    def _require_login(self, purpose: str) -> None:
        if not self.logged_in:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: {purpose} needs the user PIN",
                hint=f"add pin-value or pin-source to the URI, or set {PIN_ENV}",
            )

    def _private_key_of(self, kinds: tuple[KeyKind, ...], purpose: str) -> tuple[Any, KeyKind]:
        self._require_login(purpose)
        key = self.find_key("PRIVATE_KEY", purpose=purpose)
        kind = _key_kind(key)
        if kind not in kinds:
            wanted = "an EC P-256/P-384/P-521 key" if len(kinds) > 1 else f"an {kinds[0].value} key"
            raise KeyMaterialError(
                f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
                f"{_describe_key_type(key)}; {purpose} needs {wanted}",
                hint="point the URI at a key of the right type",
            )
        return key, kind

    @_locked
    def sign_ecdsa(self, data: bytes) -> bytes:
        """ECDSA over ``data`` with the curve's hash (P-256 SHA-256, P-384 SHA-384, P-521
        SHA-512), returned DER-encoded, as ``cryptography`` and the OMS key method produce it.

        The hash is computed here and the token signs it with ``CKM_ECDSA``: SoftHSM2 and many
        HSMs lack the combined ``CKM_ECDSA_SHA*`` mechanisms.
        """
        key, kind = self._private_key_of(
            (KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.EC_P521), "ECDSA signing"
        )
        digest = hashlib.new(_ECDSA_CURVES[kind][1], data).digest()
        raw = self._sign(key, digest, self._pkcs11.Mechanism.ECDSA, "ECDSA signing")
        half = len(raw) // 2
        if len(raw) % 2 or half == 0:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} returned a malformed ECDSA signature"
            )
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    @_locked
    def sign_ed25519(self, data: bytes) -> bytes:
        """Pure Ed25519 (``CKM_EDDSA`` without parameters) over ``data``: 64 bytes."""
        key, _ = self._private_key_of((KeyKind.ED25519,), "Ed25519 signing")
        signature = self._sign(key, data, self._pkcs11.Mechanism.EDDSA, "Ed25519 signing")
        if len(signature) != 64:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} returned a malformed Ed25519 signature"
            )
        return signature

    def _sign(self, key: Any, data: bytes, mechanism: Any, purpose: str) -> bytes:
        try:
            return bytes(key.sign(data, mechanism=mechanism))
        except self._pkcs11.exceptions.MechanismInvalid:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} does not support {purpose} ({mechanism.name})"
            ) from None
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: {purpose} with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None

    def _kek(self, purpose: str) -> Any:
        self._require_login(purpose)
        key = self.find_key("SECRET_KEY", purpose=purpose)
        if _key_kind(key) is not KeyKind.AES:
            raise KeyMaterialError(
                f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
                f"{_describe_key_type(key)}; {purpose} needs an AES key",
                hint="point the URI at an AES key-encryption key",
            )
        return key

    @_locked
    def wrap_key(self, secret: bytes, *, pad: bool = True) -> bytes:
        """Wrap ``secret`` under the AES key-encryption key the URI names.

        ``pad=True`` uses ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649: any length from 1 byte);
        ``pad=False`` uses ``CKM_AES_KEY_WRAP`` (RFC 3394: a multiple of 8 bytes, at least 16).
        The secret enters the token as a temporary session object and is destroyed after.
        """
        if not isinstance(secret, bytes | bytearray) or len(secret) == 0:
            raise ValueError("secret must be non-empty bytes")
        if not pad and (len(secret) % 8 or len(secret) < 16):
            raise ValueError("RFC 3394 key wrap needs a multiple of 8 bytes, at least 16")
        kek = self._kek("key wrapping")
        p11 = self._pkcs11
        attribute = p11.Attribute
        temporary = None
        try:
            temporary = self._session.create_object(
                {
                    attribute.CLASS: p11.ObjectClass.SECRET_KEY,
                    attribute.KEY_TYPE: p11.KeyType.GENERIC_SECRET,
                    attribute.VALUE: bytes(secret),
                    attribute.TOKEN: False,
                    attribute.PRIVATE: True,
                    attribute.SENSITIVE: False,
                    attribute.EXTRACTABLE: True,
                }
            )
            mechanism = p11.Mechanism.AES_KEY_WRAP_PAD if pad else p11.Mechanism.AES_KEY_WRAP
            wrapped = bytes(kek.wrap_key(temporary, mechanism=mechanism))
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key wrapping with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None
        finally:
            if temporary is not None:
                try:
                    temporary.destroy()
                except p11.PKCS11Error:
                    pass
        if pad and len(secret) % 8:
            # SoftHSM2 2.6 zero-pads the key value to 8 bytes *before* RFC 5649 wrapping, so the
            # blob records the padded length; catch any token doing that rather than hand back a
            # blob that unwraps to different bytes elsewhere.
            if self._unwrap(kek, wrapped, pad=True) != bytes(secret):
                raise KeyMaterialError(
                    f"PKCS#11 token {self.token_label!r} does not wrap {len(secret)}-byte secrets "
                    "per RFC 5649 (it pads them first)",
                    hint="wrap secrets whose length is a multiple of 8 bytes (e.g. 32-byte keys)",
                )
        return wrapped

    @_locked
    def unwrap_key(self, wrapped: bytes, *, pad: bool = True) -> bytes:
        """Unwrap a blob made by :meth:`wrap_key` (or any RFC 3394/5649 implementation).

        Any failure that depends on the secret (wrong key-encryption key, a changed byte, a
        truncated blob) raises the same :class:`~weightvault.errors.DecryptionError`.
        """
        if not isinstance(wrapped, bytes | bytearray):
            raise TypeError("wrapped must be bytes")
        kek = self._kek("key unwrapping")
        return self._unwrap(kek, bytes(wrapped), pad=pad)

    def _unwrap(self, kek: Any, wrapped: bytes, *, pad: bool) -> bytes:
        p11 = self._pkcs11
        attribute = p11.Attribute
        mechanism = p11.Mechanism.AES_KEY_WRAP_PAD if pad else p11.Mechanism.AES_KEY_WRAP
        if len(wrapped) < 16 or len(wrapped) % 8:
            raise DecryptionError("key unwrap failed: wrong key-encryption key or damaged data")
        unwrapped = None
        try:
            unwrapped = kek.unwrap_key(
                p11.ObjectClass.SECRET_KEY,
                p11.KeyType.GENERIC_SECRET,
                bytes(wrapped),
                mechanism=mechanism,
                store=False,
                template={
                    attribute.SENSITIVE: False,
                    attribute.EXTRACTABLE: True,
                    attribute.PRIVATE: True,
                },
            )
            return bytes(unwrapped[attribute.VALUE])
        except (
            p11.exceptions.WrappedKeyInvalid,
            p11.exceptions.WrappedKeyLenRange,
            p11.exceptions.EncryptedDataInvalid,
            p11.exceptions.EncryptedDataLenRange,
            p11.exceptions.DataInvalid,
            p11.exceptions.DataLenRange,
            p11.exceptions.GeneralError,
            p11.exceptions.FunctionFailed,
        ):
            raise DecryptionError(
                "key unwrap failed: wrong key-encryption key or damaged data"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key unwrapping with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None
        finally:
            if unwrapped is not None:
                try:
                    unwrapped.destroy()
                except p11.PKCS11Error:
                    pass

    # --- key generation -------------------------------------------------------------------------

    def _generation_template(self, label: str, key_id: bytes | None) -> dict[Any, Any]:
        self._require_login("generating keys")
        attribute = self._pkcs11.Attribute
        template: dict[Any, Any] = {attribute.LABEL: label, attribute.TOKEN: True}
        if key_id is not None:
            template[attribute.ID] = key_id
        return template

    @_locked
    def generate_ec_key_pair(
        self, label: str, *, curve: str = "P-256", key_id: bytes | None = None
    ) -> None:
        """Create an EC key pair (``P-256``, ``P-384`` or ``P-521``) whose private half is
        sensitive and non-extractable; the public half is a public object with the same label/id.
        """
        oids = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
        if curve not in oids:
            raise ValueError(f"curve must be one of {', '.join(oids)}")
        self._generate_pair(
            label,
            key_id,
            self._pkcs11.KeyType.EC,
            oids[curve],
            self._pkcs11.Mechanism.EC_KEY_PAIR_GEN,
        )

    @_locked
    def generate_ed25519_key_pair(self, label: str, *, key_id: bytes | None = None) -> None:
        """Create an Ed25519 key pair (``CKM_EC_EDWARDS_KEY_PAIR_GEN``), private half locked in."""
        self._generate_pair(
            label,
            key_id,
            self._pkcs11.KeyType.EC_EDWARDS,
            "1.3.101.112",
            self._pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )

    def _generate_pair(
        self, label: str, key_id: bytes | None, key_type: Any, curve: str, mechanism: Any
    ) -> None:
        from pkcs11.util.ec import encode_named_curve_parameters

        p11 = self._pkcs11
        attribute = p11.Attribute
        base = self._generation_template(label, key_id)
        try:
            params = self._session.create_domain_parameters(
                key_type, {attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            params.generate_keypair(
                mechanism=mechanism,
                store=True,
                public_template={**base, attribute.VERIFY: True, attribute.PRIVATE: False},
                private_template={
                    **base,
                    attribute.SIGN: True,
                    attribute.PRIVATE: True,
                    attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False,
                },
            )
        except p11.exceptions.MechanismInvalid:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} cannot generate this key type "
                f"({mechanism.name})"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key generation failed: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None

    @_locked
    def generate_aes_kek(self, label: str, *, bits: int = 256, key_id: bytes | None = None) -> None:
        """Create an AES key-encryption key that can wrap/unwrap but never be read out."""
        if bits not in (128, 192, 256):
            raise ValueError("bits must be 128, 192 or 256")
        p11 = self._pkcs11
        attribute = p11.Attribute
        template = self._generation_template(label, key_id)
        template.update(
            {
                attribute.PRIVATE: True,
                attribute.SENSITIVE: True,
                attribute.EXTRACTABLE: False,
                attribute.WRAP: True,
                attribute.UNWRAP: True,
                attribute.ENCRYPT: False,
                attribute.DECRYPT: False,
            }
        )
        try:
            self._session.generate_key(
                p11.KeyType.AES, bits, store=True, label=label, template=template
            )
        except p11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: key generation failed: "
                f"{_describe_pkcs11_error(exc)}"
            ) from None


def _unwrap_octet_string(point: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per the spec; some tokens store the raw point."""
    if len(point) >= 2 and point[0] == 0x04:
        length = point[1]
        offset = 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 2 or len(point) < 2 + count:
                return point
            length = int.from_bytes(point[2 : 2 + count], "big")
            offset = 2 + count
        if offset + length == len(point):
            return point[offset:]
    return point


# --- one-shot helpers -----------------------------------------------------------------------------


def _session(uri: Pkcs11Uri | str, pin: str | None) -> Pkcs11Session:
    return Pkcs11Session(uri, pin=pin)


def load_public_key(
    uri: Pkcs11Uri | str, *, pin: str | None = None
) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """The public key stored beside the key the URI names (no PIN needed for public objects)."""
    with _session(uri, pin) as session:
        return session.public_key()


def sign_ecdsa(uri: Pkcs11Uri | str, data: bytes, *, pin: str | None = None) -> bytes:
    """DER ECDSA signature over ``data`` (see :meth:`Pkcs11Session.sign_ecdsa`)."""
    with _session(uri, pin) as session:
        return session.sign_ecdsa(data)


def sign_ed25519(uri: Pkcs11Uri | str, data: bytes, *, pin: str | None = None) -> bytes:
    """64-byte Ed25519 signature over ``data`` (see :meth:`Pkcs11Session.sign_ed25519`)."""
    with _session(uri, pin) as session:
        return session.sign_ed25519(data)


def wrap_key(
    uri: Pkcs11Uri | str, secret: bytes, *, pad: bool = True, pin: str | None = None
) -> bytes:
    """Wrap ``secret`` under the token's AES key-encryption key (see
    :meth:`Pkcs11Session.wrap_key`)."""
    with _session(uri, pin) as session:
        return session.wrap_key(secret, pad=pad)


def unwrap_key(
    uri: Pkcs11Uri | str, wrapped: bytes, *, pad: bool = True, pin: str | None = None
) -> bytes:
    """Unwrap a blob made by :func:`wrap_key` (see :meth:`Pkcs11Session.unwrap_key`)."""
    with _session(uri, pin) as session:
        return session.unwrap_key(wrapped, pad=pad)


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
