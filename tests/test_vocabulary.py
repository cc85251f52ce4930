"""One vocabulary: hash algorithms, strict base64 and JSON, and error reasons, each defined once.

The shared codecs are what every format's strictness rests on, so they get their own tests here
(the formats' own tests check that they use them); reasons are what programs branch on, so
each is checked where it is raised, and the source is checked for decisions read off words.
"""

from __future__ import annotations

import ast
import hashlib
import pickle
from pathlib import Path

import blake3
import pytest

from paths import REPO
from weightvault import _b64
from weightvault._fs import ensure_writable_destination
from weightvault._json import DuplicateKeyError, canonical, load_object
from weightvault.errors import (
    DecryptionError,
    FileSystemError,
    FormatError,
    InputError,
    KeyMaterialError,
    PolicyError,
    Reason,
    UnsafeFileError,
    UsageError,
    VerificationError,
    WeightvaultError,
)
from weightvault.hashing import HashAlgorithm, digest_size, new_hasher
from weightvault.oms.manifest import Serialization
from weightvault.tree import SymlinkError, walk_model

# --- hash algorithms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "oms_name", "size", "reference"),
    [
        ("sha256", "sha256", 32, hashlib.sha256),
        ("blake2", "blake2b", 64, hashlib.blake2b),
        ("blake3", "blake3", 32, blake3.blake3),
    ],
)
def test_each_algorithm_is_named_sized_and_hashed_in_one_place(
    name: str, oms_name: str, size: int, reference: object
) -> None:
    algorithm = HashAlgorithm.parse(name)
    assert algorithm == name and f"{algorithm}" == name  # a member is its user-facing name
    assert algorithm.oms_name == oms_name
    assert HashAlgorithm.from_oms_name(oms_name) is algorithm
    assert HashAlgorithm.from_oms_name(name) is algorithm  # readers accept either spelling
    assert algorithm.digest_size == size == digest_size(name)
    hasher = new_hasher(name)
    hasher.update(b"weights")
    assert hasher.digest() == reference(b"weights").digest()  # type: ignore[operator]
    assert len(hasher.digest()) == size


def test_an_unknown_algorithm_is_a_caller_mistake_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'md5' \(expected sha256, blake2, blake3\)"):
        HashAlgorithm.parse("md5")
    assert HashAlgorithm.from_oms_name("md5") is None
    assert HashAlgorithm.from_oms_name("blake2") is HashAlgorithm.BLAKE2


def test_a_manifest_stores_the_algorithm_not_a_string() -> None:
    params = Serialization("files", "blake2")  # type: ignore[arg-type]
    assert params.hash_type is HashAlgorithm.BLAKE2
    assert params.to_json_obj()["hash_type"] == "blake2b"
    with pytest.raises(ValueError, match="unsupported hash type 'md5'"):
        Serialization("files", "md5")  # type: ignore[arg-type]


# --- base64 ------------------------------------------------------------------------------------


def test_base64_takes_the_canonical_spelling_only() -> None:
    assert _b64.decode("d2VpZ2h0cw==", "f") == b"weights"
    assert _b64.encode(b"weights") == "d2VpZ2h0cw=="
    for bad, message in [
        ("d2VpZ2h0cw", "f: not valid base64"),  # padding missing
        ("d2VpZ2h0 cw==", "f: not valid base64"),  # a space inside
        ("d2VpZ2h0cx==", "f: base64 is not in canonical form"),  # non-zero trailing bits
        ("d2VpZ2h0cw==\n", "f: not valid base64"),
        ("\u00e9", "f: not valid base64"),
    ]:
        with pytest.raises(FormatError, match=message):
            _b64.decode(bad, "f")
    with pytest.raises(FormatError, match="f: expected a base64 string"):
        _b64.decode(7, "f")
    with pytest.raises(FormatError, match="f: expected 4 bytes, got 7"):
        _b64.decode("d2VpZ2h0cw==", "f", size=4)
    with pytest.raises(FormatError, match="at most 3 bytes"):
        _b64.decode("d2VpZ2h0cw==", "f", max_size=3)
    # where a format has always read other tools' spelling, only the alphabet is enforced
    assert _b64.decode("d2VpZ2h0cx==", "f", canonical=False) == b"weights"


def test_protobuf_json_bytes_accept_the_url_safe_alphabet_too() -> None:
    assert _b64.decode_proto("+/8=", "f") == b"\xfb\xff"
    assert _b64.decode_proto("-_8", "f") == b"\xfb\xff"
    assert _b64.decode_proto("  +/8=  ", "f") == b"\xfb\xff"
    assert _b64.decode_proto("", "f") == b""
    with pytest.raises(FormatError, match="f: not valid base64"):
        _b64.decode_proto("+/8", "f")


def test_base64url_is_unpadded_canonical_and_exact() -> None:
    text = _b64.encode_url(b"\xfb\xff" * 16)
    assert "=" not in text and _b64.decode_url(text, "k", size=32) == b"\xfb\xff" * 16
    with pytest.raises(FormatError, match="k: expected 32 bytes of canonical base64url"):
        _b64.decode_url(text + "A", "k", size=32)
    with pytest.raises(FormatError, match="k: expected 31 bytes"):
        _b64.decode_url(text, "k", size=31)


# --- JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1, "a": 2}', "doc: duplicate key 'a'"),
        (b'{"a": NaN}', "doc: NaN is not valid JSON"),
        (b'{"a": -Infinity}', "doc: -Infinity is not valid JSON"),
        (b"\xff{}", "doc: not UTF-8 text"),
        (b"{", "doc: malformed JSON at line 1 column 2"),
        (b"[1]", "doc: expected a JSON object at the top level"),
        (b"[" * 100_000 + b"]" * 100_000, "doc: "),
    ],
)
def test_json_is_refused_naming_the_document(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        load_object(data, "doc")


def test_json_size_is_checked_before_parsing_and_duplicates_stay_value_errors() -> None:
    with pytest.raises(FormatError, match="doc: larger than 4 bytes"):
        load_object(b'{"a": 1}', "doc", max_bytes=4)
    assert load_object('{"a": [1, {"b": null}]}', "doc") == {"a": [1, {"b": None}]}
    with pytest.raises(ValueError):  # json's own errors are ValueErrors; so is this one
        load_object(b'{"a": 1, "a": 1}', "doc")
    assert issubclass(DuplicateKeyError, FormatError)


def test_canonical_json_is_one_byte_string_per_document() -> None:
    document = {"b": [1, 2], "a": "\u00e9"}
    assert canonical(document) == '{"a":"\u00e9","b":[1,2]}'.encode()
    assert canonical(document, ascii_only=True) == b'{"a":"\\u00e9","b":[1,2]}'
    assert load_object(canonical(document), "doc") == document


# --- error reasons -----------------------------------------------------------------------------


def test_every_error_class_has_its_kind_as_reason() -> None:
    kinds = {
        UsageError: Reason.USAGE,
        InputError: Reason.INPUT,
        FormatError: Reason.FORMAT,
        KeyMaterialError: Reason.KEY_MATERIAL,
        VerificationError: Reason.VERIFICATION,
        PolicyError: Reason.POLICY,
        UnsafeFileError: Reason.UNSAFE_FILE,
        DecryptionError: Reason.DECRYPTION,
        FileSystemError: Reason.FILE_SYSTEM,
    }
    for cls, reason in kinds.items():
        assert cls("x").reason is reason
    assert InputError("x", reason=Reason.EXISTS).reason is Reason.EXISTS
    with pytest.raises(ValueError):
        InputError("x", reason="no-such-reason")  # type: ignore[arg-type]
    back = pickle.loads(pickle.dumps(InputError("x", reason=Reason.NO_FILES)))
    assert back.reason is Reason.NO_FILES


def test_reasons_are_named_where_they_are_raised(tmp_path: Path) -> None:
    def reason_of(action: object) -> Reason:
        with pytest.raises(WeightvaultError) as caught:
            action()  # type: ignore[operator]
        return caught.value.reason

    empty = tmp_path / "empty"
    empty.mkdir()
    assert reason_of(lambda: walk_model(empty)) is Reason.NO_FILES
    assert reason_of(lambda: walk_model(tmp_path / "absent")) is Reason.NOT_FOUND
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    (model / "link").symlink_to("w.bin")
    with pytest.raises(SymlinkError) as caught:
        walk_model(model)
    assert caught.value.reason is Reason.SYMLINK
    out = tmp_path / "out"
    out.write_bytes(b"x")
    assert reason_of(lambda: ensure_writable_destination(out, force=False)) is Reason.EXISTS


_EXCEPTION_NAMES = ("exc", "error", "err", "e")


def _reads_message_words(node: ast.Compare) -> bool:
    """``"..." in exc.message`` / ``"..." in str(exc)`` / ``exc.message == "..."``."""
    sides = [node.left, *node.comparators]

    def message_like(expr: ast.expr) -> bool:
        if isinstance(expr, ast.Attribute) and expr.attr == "message":
            return True
        if isinstance(expr, ast.Call) and expr.args and isinstance(expr.func, ast.Name):
            argument = expr.args[0]
            is_exception = isinstance(argument, ast.Name) and argument.id in _EXCEPTION_NAMES
            return expr.func.id == "str" and is_exception
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            return expr.func.attr == "one_line"
        return False

    has_text = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
    return has_text and any(message_like(s) for s in sides)


#: Words of another library's exception, the only way it tells its causes apart.
_FOREIGN_WORDS = {
    "tlog/_dialects.py",  # sqlite3.OperationalError: "table ... already exists" has no own code
}


def test_no_decision_is_read_off_an_error_message() -> None:
    source = REPO / "src" / "weightvault"
    offenders = []
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source).as_posix()
        if relative in _FOREIGN_WORDS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{relative}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and _reads_message_words(node)
        ]
    assert not offenders, offenders
