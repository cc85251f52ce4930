"""RFC 7512 PKCS#11 URIs: strict parsing, PIN-free formatting, module and PIN resolution."""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightvault._fs import read_small_file
from weightvault.errors import KeyMaterialError

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
    data = read_small_file(path, "PKCS#11 pin-source file", _MAX_PIN_FILE_BYTES, KeyMaterialError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyMaterialError(f"PKCS#11 pin-source file {str(path)!r} is not UTF-8") from None
    pin = text.splitlines()[0] if text else ""
    if not pin:
        raise KeyMaterialError(f"PKCS#11 pin-source file {str(path)!r} is empty")
    return pin
