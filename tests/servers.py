"""Stand-in HTTP servers for tests: a handler class served on loopback from a daemon thread.

Usage::

    from tests.servers import loopback_http_server

    with loopback_http_server(MyHandler) as url:   # "http://127.0.0.1:PORT"
        ...

The real services the tests run have their own helpers: PostgreSQL in :mod:`tests.postgres`,
S3 in :mod:`tests.s3`, the custody service in :mod:`tests.custody.helpers`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import pytest

__all__ = ["bypass_proxy_for_loopback", "loopback_http_server"]


@contextlib.contextmanager
def loopback_http_server(
    handler: type[BaseHTTPRequestHandler], *, threaded: bool = False
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends; yield the base URL.

    ``threaded`` answers requests concurrently (a client that holds one connection open while
    opening another would otherwise wait forever).
    """
    server_class = ThreadingHTTPServer if threaded else HTTPServer
    server = server_class(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def bypass_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep an ambient HTTP(S) proxy from intercepting requests to a loopback stand-in."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
