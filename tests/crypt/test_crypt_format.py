"""The .wvenc header: byte-exact round trips and strict parsing that names the bad field."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightvault.crypt.format import (
    MAGIC,
    FileContext,
    canonical_json,
    parse_header,
    serialize_header,
)
from weightvault.crypt.recipients import KeyringKey, X25519Identity
from weightvault.crypt.stanzas import KeyringStanza
from weightvault.errors import FormatError

DEK = bytes(range(32))
CONTEXT = FileContext(
    model="acme/llm-7b",
    path="weights/model-00001-of-00002.safetensors",
    file_index=0,
    file_count=2,
    set_id="00" * 16,
    manifest_digest=None,
)


def _header(context: FileContext = CONTEXT) -> bytes:
    stanzas = (KeyringKey(bytes(32)).wrap(DEK), X25519Identity.generate().recipient().wrap(DEK))
    return serialize_header(context, stanzas, DEK)


def _with_json(document: object, *, raw: bytes | None = None) -> bytes:
    body = raw if raw is not None else canonical_json(document)
    return MAGIC + struct.pack(">HI", 1, len(body)) + body + bytes(32)


def _document() -> dict[str, object]:
    data = _header()
    length = struct.unpack(">I", data[8:12])[0]
    document: dict[str, object] = json.loads(data[12 : 12 + length])
    return document


def test_round_trip_is_byte_exact() -> None:
    data = _header()
    header = parse_header(data + b"body...", "f.wvenc")
    assert header.context == CONTEXT
    assert header.raw + header.mac == data
    assert serialize_header(header.context, header.recipients, DEK) == data
    assert header.body_context().startswith(b"weightvault.wvenc/v1\n")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("suite"), "header.suite: missing"),
        (lambda d: d.update(extra=1), "header.extra: unknown field"),
        (lambda d: d.update(suite="cobblestone-128"), "unsupported suite"),
        (lambda d: d["context"].update(file_index=True), "context.file_index: expected an integer"),
        (lambda d: d["context"].update(file_index=2), "file_index: must be between"),
        (lambda d: d["context"].update(file_count=0), "file_count: must be between"),
        (lambda d: d["context"].update(path="../etc/passwd"), "context.path"),
        (lambda d: d["context"].update(path="/abs"), "context.path"),
        (lambda d: d["context"].update(model=""), "context.model"),
        (lambda d: d["context"].update(set_id="XY" * 16), "context.set_id"),
        (lambda d: d["context"].update(manifest_digest="md5:00"), "manifest_digest"),
        (lambda d: d["context"].pop("path"), "context.path: missing"),
        (lambda d: d.update(recipients=[]), "header.recipients: expected a non-empty list"),
        (lambda d: d["recipients"][0].update(type="rsa"), "recipients[0].type: unknown"),
        (lambda d: d["recipients"][0].update(kid="ABC"), "recipients[0].kid"),
        (lambda d: d["recipients"][1].update(nonce="AAAA"), "recipients[1].nonce: expected 12"),
        (lambda d: d["recipients"][1].update(wrapped="!!"), "recipients[1].wrapped: not valid"),
        (lambda d: d["recipients"][0].update(more=1), "recipients[0].more: unknown field"),
    ],
)
def test_invalid_fields_are_named(mutate: object, message: str) -> None:
    document = _document()
    mutate(document)  # type: ignore[operator]
    with pytest.raises(FormatError, match=r"^f\.wvenc: ") as caught:
        parse_header(_with_json(document), "f.wvenc")
    assert message in caught.value.message


def test_non_canonical_json_and_duplicate_keys_are_refused() -> None:
    document = _document()
    spaced = json.dumps(document, sort_keys=True).encode()  # spaces after separators
    with pytest.raises(FormatError, match="canonical"):
        parse_header(_with_json(None, raw=spaced), "f")
    body = canonical_json(document)
    duplicated = body[:-1] + b',"suite":"cobblestone-256"}'
    with pytest.raises(FormatError, match="duplicate key"):
        parse_header(_with_json(None, raw=duplicated), "f")
    non_canonical_b64 = dict(document)
    stanza = KeyringStanza.from_json(document["recipients"][0], "r")  # type: ignore[index]
    entry = stanza.to_json()
    entry["nonce"] = entry["nonce"].rstrip("=") + "\n"
    non_canonical_b64["recipients"] = [entry]
    with pytest.raises(FormatError, match="base64"):
        parse_header(_with_json(non_canonical_b64), "f")


def test_lone_surrogate_in_json_is_a_format_error() -> None:
    document = _document()
    raw = canonical_json(document).replace(b'"acme/llm-7b"', b'"\\ud800"')
    with pytest.raises(FormatError, match="not valid Unicode"):
        parse_header(_with_json(None, raw=raw), "f")


def test_prefix_problems() -> None:
    data = _header()
    with pytest.raises(FormatError, match="bad magic"):
        parse_header(b"PK\x03\x04" + data[4:], "f")
    with pytest.raises(FormatError, match=r"version 7 is not supported"):
        parse_header(data[:6] + b"\x00\x07" + data[8:], "f")
    with pytest.raises(FormatError, match="truncated inside its header"):
        parse_header(data[:-1], "f")
    with pytest.raises(FormatError, match="out of range"):
        parse_header(data[:8] + struct.pack(">I", 1 << 30) + data[12:], "f")


def test_context_constructor_validates() -> None:
    with pytest.raises(FormatError, match=r"context\.path"):
        FileContext("m", "a//b", 0, 1, "00" * 16)
    with pytest.raises(FormatError, match="control characters"):
        FileContext("m\n", "a", 0, 1, "00" * 16)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=700))
def test_fuzzed_headers_raise_only_format_errors(noise: bytes, cut: int) -> None:
    data = bytearray(_header())
    for i, byte in enumerate(noise[: len(data)]):
        if byte % 7 == 0:
            data[i] ^= byte | 1
    try:
        parse_header(bytes(data[: cut + 12]), "f")
    except FormatError as exc:
        assert exc.message.startswith("f: ")


@settings(max_examples=50, deadline=None)
@given(
    model=st.text(min_size=1, max_size=40).filter(lambda s: all(ord(c) >= 32 for c in s)),
    parts=st.lists(st.text("abc-_.é", min_size=1, max_size=8), min_size=1, max_size=4).filter(
        lambda ps: all(p not in (".", "..") for p in ps)
    ),
    count=st.integers(min_value=1, max_value=10**6),
)
def test_any_valid_context_round_trips(model: str, parts: list[str], count: int) -> None:
    context = FileContext(model, "/".join(parts), count - 1, count, os.urandom(16).hex())
    header = parse_header(serialize_header(context, (KeyringKey(bytes(32)).wrap(DEK),), DEK), "f")
    assert header.context == context
