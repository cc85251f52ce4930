"""Read-only file objects handed to parsers.

A module of its own, importing only ``io``: the scanner's start-up path uses it, and a clean
``scan`` must not pay for ``pathlib`` or ``shutil`` (``_fs`` imports both).
"""

from __future__ import annotations

import io

__all__ = ["SizedReader"]


class SizedReader(io.RawIOBase):
    """A read-only, seekable raw file of ``_size`` bytes that keeps its own position.

    Why: parsers (``zipfile``, ``h5py``, pyarrow, the safetensors readers) are handed file
    objects that are not plain files (a region of a file, a buffer, a file whose bytes are
    checked before they are served) and all of them answer ``readable``, ``seekable`` and
    ``tell`` the same way; the answers and the usual seek rule (an unknown ``whence`` is a
    ``KeyError``, a negative position a ``ValueError``) live here once. A subclass sets
    ``_size`` and implements ``readinto`` (and overrides ``seek`` where its rule differs).
    """

    _size: int

    def __init__(self) -> None:
        super().__init__()
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position
