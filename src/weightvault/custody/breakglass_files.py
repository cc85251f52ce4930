"""Break-glass on files: split a keyring (KEK) file into share files and recover it.

The secret that is split is the keyring's key line (``wvkek1:...``), so the recovered file is
exactly a keyring file again. Each share file also names the keyring's key id; after combining,
the recovered keyring is parsed and its key id must match (a second check on top of the shares'
commitment), so a reconstructed key is authenticated twice before anyone uses it.
"""

from __future__ import annotations

import re
from pathlib import Path

from weightvault.custody.breakglass import Share, recover, split
from weightvault.errors import FormatError, InputError, VerificationError

__all__ = ["recover_keyring", "split_keyring"]

_KID_RE = re.compile(r"# keyring kid: ([0-9a-f]{16})")


def split_keyring(kek_path: Path, threshold: int, count: int, output: Path) -> list[Path]:
    """Write ``share-1.txt`` .. ``share-N.txt`` (0600) into ``output``."""
    from weightvault.crypt.recipients.keyring import load_keyring
    from weightvault.keys.files import key_lines, read_secret_file, write_secret_file

    keyring = load_keyring(kek_path)
    lines = key_lines(read_secret_file(kek_path, "keyring file"))
    secret = lines[0].encode("ascii")
    shares = split(secret, threshold, count)
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = []
    for share in shares:
        path = output / f"share-{share.x}.txt"
        write_secret_file(
            path,
            "# weightvault break-glass share: keep offline; "
            f"{threshold} of {count} recover the service KEK\n"
            f"# keyring kid: {keyring.kid}\n{share.to_text()}\n",
        )
        paths.append(path)
    return paths


def recover_keyring(share_paths: list[Path], output: Path) -> str:
    """Combine share files into a keyring file at ``output``; returns its key id."""
    from weightvault.crypt.recipients.keyring import parse_keyring_text
    from weightvault.keys.files import key_lines, read_secret_file, write_secret_file

    shares = []
    kids = set()
    for path in share_paths:
        text = read_secret_file(path, "share file")
        match = _KID_RE.search(text)
        if match is None:
            raise FormatError(f"{path}: no '# keyring kid:' line; not a weightvault share file")
        kids.add(match.group(1))
        lines = key_lines(text)
        if len(lines) != 1:
            raise FormatError(f"{path}: expected exactly one share line")
        shares.append(Share.from_text(lines[0]))
    if len(kids) != 1:
        raise VerificationError("the shares name different keyrings")
    secret = recover(shares)
    try:
        line = secret.decode("ascii")
    except UnicodeDecodeError as exc:
        raise VerificationError("recovered secret is not a keyring key") from exc
    keyring = parse_keyring_text(line + "\n", str(output))
    if keyring is None or keyring.kid != next(iter(kids)):
        raise VerificationError("recovered key does not match the keyring the shares name")
    if output.exists():
        raise InputError(f"{output}: already exists; choose a new path")
    write_secret_file(output, f"# weightvault keyring (recovered from shares)\n{line}\n")
    return keyring.kid
