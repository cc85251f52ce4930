"""An upload's request body as a blocking file-like object, for the push pipeline's thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.from_thread
from starlette.requests import ClientDisconnect

from weightvault.errors import FormatError

__all__ = ["StreamReader"]


class StreamReader:
    """A blocking file-like view of an ASGI request body, for a worker thread."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._done = False

    async def _next(self) -> bytes:
        try:
            return await self._stream.__anext__()
        except ClientDisconnect as exc:
            raise FormatError("upload: the client disconnected before the body ended") from exc

    def _fill(self, want: int) -> None:
        while len(self._buffer) < want and not self._done:
            try:
                piece: bytes = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                self._done = True
                break
            self._buffer += piece

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = 1 << 62
        self._fill(size)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readline(self, limit: int = -1, /) -> bytes:
        limit = limit if limit >= 0 else 1 << 62
        while True:
            newline = self._buffer.find(b"\n", 0, limit)
            if newline >= 0:
                return self.read(newline + 1)
            if len(self._buffer) >= limit or self._done:
                return self.read(limit)
            self._fill(len(self._buffer) + 65536)
