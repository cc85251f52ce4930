"""Running one replica: build the :class:`~weightvault.custody.service.Custody`, serve it.

Uvicorn serves on the given host and port (loopback by default). Put TLS in front of it (or pass
certificate files) when it is reachable from other machines: tokens travel in headers.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from weightvault.custody.config import ServiceConfig

__all__ = ["run_server"]


def run_server(
    config: ServiceConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    init_admin: str | None = None,
    admin_token_file: Path | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until interrupted. With ``init_admin``, create the first admin on an empty database
    and write its token (shown once) to ``admin_token_file`` (mode 0600) or standard output.
    ``on_ready`` is called once the service listens."""
    import uvicorn

    from weightvault.custody.app import create_app
    from weightvault.custody.service import Custody

    custody = Custody(config)
    try:
        if init_admin:
            token = custody.bootstrap_admin(init_admin)
            if token is not None:
                if admin_token_file is not None:
                    fd = os.open(admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as handle:
                        handle.write(token + "\n")
                else:
                    print(f"admin token (shown once): {token}", flush=True)
        app = create_app(custody)

        class _Server(uvicorn.Server):
            """Calls ``on_ready`` once the socket listens (a client may connect at once)."""

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started and on_ready is not None:
                    on_ready()

        server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                timeout_graceful_shutdown=5,
                h11_max_incomplete_event_size=64 * 1024,
            )
        )
        scheme = "https" if ssl_certfile else "http"
        log_place = "postgresql" if "://" in config.log_location else config.log_location
        sys.stderr.write(
            f"weightvault custody service on {scheme}://{host}:{port} "
            f"(database {custody.store.dialect}, blobs {custody.blobs.describe()}, "
            f"audit log {log_place})\n"
        )
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
        server.run()
    finally:
        custody.close()
