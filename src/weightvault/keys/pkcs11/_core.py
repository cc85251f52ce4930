"""The session itself: opening it on the right token, logging in once per token, closing it,
and finding the one object the URI names. The operations are mixins over this class."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Self, TypeVar, cast

from weightvault.errors import KeyMaterialError
from weightvault.keys.pkcs11._kinds import KeyKind, KeyProtection, _key_kind
from weightvault.keys.pkcs11._token import (
    _acquire_module,
    _describe_pkcs11_error,
    _find_token,
    _import_pkcs11,
    _Login,
    _release_module,
    _token_text,
)
from weightvault.keys.pkcs11._uri import PIN_ENV, Pkcs11Uri

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
    def wrapper(self: _SessionBase, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise ValueError("PKCS#11 session is closed")
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class _SessionBase:
    """An open (and, with a PIN, logged-in) session on the token a URI names: lifecycle, login
    and object lookup, shared by the operation mixins that :class:`Pkcs11Session` combines."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
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

    @_locked
    def key_protection(self) -> KeyProtection:
        """Whether the secret (``type=secret-key``) or private key the URI names can leave the
        token: its extractable/sensitive attributes, as the token reports them."""
        self._require_login("reading the key's attributes")
        object_class = "SECRET_KEY" if self.uri.type == "secret-key" else "PRIVATE_KEY"
        key = self.find_key(object_class, purpose="reading the key's attributes")
        attribute = self._pkcs11.Attribute

        def flag(name: str) -> bool:
            try:
                return bool(key[getattr(attribute, name)])
            except self._pkcs11.PKCS11Error:
                return name in ("EXTRACTABLE",)  # unknown: assume the unsafe answer

        return KeyProtection(
            extractable=flag("EXTRACTABLE"),
            sensitive=flag("SENSITIVE"),
            never_extractable=flag("NEVER_EXTRACTABLE"),
            always_sensitive=flag("ALWAYS_SENSITIVE"),
        )

    def _require_login(self, purpose: str) -> None:
        if not self.logged_in:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: {purpose} needs the user PIN",
                hint=f"add pin-value or pin-source to the URI, or set {PIN_ENV}",
            )
