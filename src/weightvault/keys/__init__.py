"""Shared key-material layer: keys held outside the process (PKCS#11 tokens and HSMs).

Capabilities (signing, encryption, the transparency log, custody) reach hardware keys through
:mod:`weightvault.keys.pkcs11` so that URI parsing, PIN handling and error messages are the same
everywhere. The module needs the ``[pkcs11]`` extra (``python-pkcs11``) only when a token is used.
"""

from __future__ import annotations
