"""Landlock (Linux 5.13+): the worker's file-system and TCP allow-list, applied to itself.

A process that calls :func:`restrict` can afterwards open only paths beneath the read-only and
read-write roots it named, and (ABI 4+, Linux 6.7+) neither bind nor connect TCP sockets. The
rules are inherited by every child and cannot be lifted. The system calls are made through
``ctypes`` (``landlock_create_ruleset`` = 444, ``landlock_add_rule`` = 445,
``landlock_restrict_self`` = 446 on every Linux architecture; struct layouts from
``include/uapi/linux/landlock.h``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

__all__ = ["abi_version", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_* bits.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = (
    1 << 8,
    1 << 9,
    1 << 10,
    1 << 11,
    1 << 12,
)
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
# LANDLOCK_ACCESS_NET_* bits (ABI 4).
_BIND_TCP, _CONNECT_TCP = 1 << 0, 1 << 1

_READ = _EXECUTE | _READ_FILE | _READ_DIR
_WRITE = (
    _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | _MAKE_SYM | _MAKE_FIFO
    | _MAKE_SOCK | _MAKE_CHAR | _MAKE_BLOCK
)  # fmt: skip


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is absent or disabled."""
    try:
        result = int(_libc().syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(result, 0)


def _handled_fs(abi: int) -> int:
    handled = _READ | _WRITE
    if abi >= 2:
        handled |= _REFER
    if abi >= 3:
        handled |= _TRUNCATE
    if abi >= 5:
        handled |= _IOCTL_DEV
    return handled


def restrict(read_only: Iterable[str], read_write: Iterable[str]) -> int:
    """Allow reading beneath ``read_only``, reading and writing beneath ``read_write``, nothing
    else (no TCP either, where the kernel can say so); returns the ABI version used.

    Raises :class:`OSError` when the kernel refuses (the caller must then not run the job).
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available on this kernel")
    libc = _libc()
    handled = _handled_fs(abi)
    # Only the first two fields exist before ABI 6; pass the size the kernel knows.
    attr = _RulesetAttr(handled, (_BIND_TCP | _CONNECT_TCP) if abi >= 4 else 0, 0)
    size = 16 if abi >= 4 else 8
    if abi >= 6:
        size = ctypes.sizeof(_RulesetAttr)
    ruleset = int(libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        write = (
            _WRITE | _READ | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
        ) & handled
        for paths, access in ((read_only, _READ), (read_write, write)):
            for path in paths:
                _add_path(libc, ruleset, path, access)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def _add_path(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a root that does not exist needs no rule
    try:
        if not os.path.isdir(path):
            # Files accept only file rights.
            access &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
        rule = _PathBeneathAttr(access, fd)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)
