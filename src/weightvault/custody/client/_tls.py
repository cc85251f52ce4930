"""One verified TLS context per CA setting, shared by every :class:`VaultClient` of the process.

Given ``verify=True``, httpx builds a fresh :class:`ssl.SSLContext` for each client, and loading
the CA bundle into it costs tens of milliseconds of CPU: a tool that makes a client per request
or per thread pays it every time. The context here is the one httpx would build (the CA file
or folder named by ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, else certifi's bundle;
:func:`ssl.create_default_context`: certificates and host names checked), built once per CA
location and version of its file; a changed or replaced CA file gets a context of its own.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading

__all__ = ["verified_context"]

_lock = threading.Lock()


@functools.cache
def _context(
    cafile: str | None, capath: str | None, _version: tuple[int, int, int], _keylog: str | None
) -> ssl.SSLContext:
    """A context trusting ``cafile`` or ``capath``. The other arguments are only keys:
    ``_version`` tells versions of the CA file apart, ``_keylog`` is ``SSLKEYLOGFILE``, which
    :func:`ssl.create_default_context` reads."""
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _version(path: str) -> tuple[int, int, int]:
    """What tells one version of a CA file from another without reading it (missing: zeros,
    and :func:`ssl.create_default_context` raises as it would have)."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def verified_context() -> ssl.SSLContext:
    """The process's verified context for the CA setting in force now (as httpx reads it)."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = None if cafile else os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        import certifi

        cafile = certifi.where()
    version = _version(cafile) if cafile is not None else (0, 0, 0)
    with _lock:  # one context per setting, even when the first clients start at once
        return _context(cafile, capath, version, os.environ.get("SSLKEYLOGFILE"))
