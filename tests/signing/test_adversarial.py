"""Attacks and bad input against sign/verify: every one is caught and named."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.signing import check, digest, sign, verify
from weightvault.signing.key import KeySigner, KeyVerifier


@pytest.fixture
def signed(model: Path, keypair: tuple[Path, Path]) -> tuple[Path, KeyVerifier]:
    sign(model, KeySigner.from_file(keypair[0]))
    return model, KeyVerifier.from_file(keypair[1])


def _files(model: Path) -> list[Path]:
    return sorted(p for p in model.rglob("*") if p.is_file() and p.name != "model.sig")


@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_single_bit_flips_in_every_file_are_named(
    model: Path, keypair: tuple[Path, Path], serialization: str
) -> None:
    sign(model, KeySigner.from_file(keypair[0]), serialization=serialization, shard_size=65536)
    verifier = KeyVerifier.from_file(keypair[1])
    rng = random.Random(99)
    for path in _files(model):
        original = path.read_bytes()
        positions = {0, len(original) - 1, *(rng.randrange(len(original)) for _ in range(4))}
        for position in sorted(positions):
            data = bytearray(original)
            data[position] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
            result = check(model, None, verifier)
            assert result.changed == (path.relative_to(model).as_posix(),), (path, position)
            assert not result.missing and not result.extra
        path.write_bytes(original)
    assert check(model, None, verifier).ok


@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_truncation_is_named(model: Path, keypair: tuple[Path, Path], serialization: str) -> None:
    sign(model, KeySigner.from_file(keypair[0]), serialization=serialization, shard_size=65536)
    weights = model / "model.safetensors"
    for cut in (1, 65536, weights.stat().st_size - 1):
        data = weights.read_bytes()
        weights.write_bytes(data[:cut])
        result = check(model, None, KeyVerifier.from_file(keypair[1]))
        assert result.changed == ("model.safetensors",)
        weights.write_bytes(data)


def test_added_deleted_renamed_and_swapped_files(signed: tuple[Path, KeyVerifier]) -> None:
    model, verifier = signed
    (model / "sub" / "backdoor.py").write_text("import os")
    assert check(model, None, verifier).extra == ("sub/backdoor.py",)
    (model / "sub" / "backdoor.py").unlink()

    (model / "tokenizer.json").rename(model / "tokenizer2.json")
    result = check(model, None, verifier)
    assert result.missing == ("tokenizer.json",)
    assert result.extra == ("tokenizer2.json",)
    (model / "tokenizer2.json").rename(model / "tokenizer.json")

    (model / "config.json").unlink()
    assert check(model, None, verifier).missing == ("config.json",)
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "layers": 2}))
    assert check(model, None, verifier).ok

    a, b = model / "config.json", model / "tokenizer.json"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert check(model, None, verifier).changed == ("config.json", "tokenizer.json")


def test_symlink_swapped_in_is_a_mismatch(signed: tuple[Path, KeyVerifier], tmp_path: Path) -> None:
    model, verifier = signed
    target = model / "config.json"
    copy = tmp_path / "elsewhere.json"
    shutil.copy(target, copy)
    target.unlink()
    os.symlink(copy, target)  # same bytes, but a link out of the tree
    result = check(model, None, verifier)
    assert result.symlinks == ("config.json",)
    assert not result.ok
    target.unlink()
    shutil.copy(model / "tokenizer.json", model / "tok-copy")
    os.symlink("tok-copy", target)  # inside the tree this time
    assert check(model, None, verifier).symlinks == ("config.json",)
    with pytest.raises(VerificationError, match=r"symlink not allowed: config\.json"):
        verify(model, None, verifier)


def test_signature_from_another_key(
    signed: tuple[Path, KeyVerifier], other_keypair: tuple[Path, Path]
) -> None:
    model, _ = signed
    result = check(model, None, KeyVerifier.from_file(other_keypair[1]))
    assert "signed by a different key" in (result.signature_error or "")
    # Even with the hint removed, the signature itself does not verify.
    doc = json.loads((model / "model.sig").read_bytes())
    doc["verificationMaterial"]["publicKey"]["hint"] = ""
    (model / "model.sig").write_text(json.dumps(doc))
    result = check(model, None, KeyVerifier.from_file(other_keypair[1]))
    assert "signature does not verify" in (result.signature_error or "")


def _rewrite_payload(sig_path: Path, edit: object) -> None:
    doc = json.loads(sig_path.read_bytes())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    edit(statement)  # type: ignore[operator]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig_path.write_text(json.dumps(doc))


def test_payload_edited_without_resigning(signed: tuple[Path, KeyVerifier]) -> None:
    model, verifier = signed
    (model / "config.json").write_text('{"evil": true}')

    def point_at_evil(statement: dict[str, object]) -> None:
        manifest = digest(model)
        statement["predicate"]["resources"] = [r.to_json_obj() for r in manifest.resources]  # type: ignore[index]
        statement["subject"][0]["digest"]["sha256"] = manifest.root_digest.hex()  # type: ignore[index]

    _rewrite_payload(model / "model.sig", point_at_evil)
    result = check(model, None, verifier)
    assert "signature does not verify" in (result.signature_error or "")
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify(model, None, verifier)


def _resign(model: Path, keypair: tuple[Path, Path], edit: object) -> None:
    statement = json.loads(digest(model).to_payload())
    edit(statement)  # type: ignore[operator]
    payload = json.dumps(statement).encode()
    bundle = KeySigner.from_file(keypair[0]).sign(INTOTO_PAYLOAD_TYPE, payload)
    (model / "model.sig").write_bytes(bundle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.__setitem__("predicateType", "https://evil/v1"), "predicateType"),
        (lambda s: s.__setitem__("_type", "https://in-toto.io/Statement/v0.1"), "payload._type"),
        (
            lambda s: s["predicate"]["serialization"].__setitem__("method", "tensors"),
            "unknown serialization method 'tensors'",
        ),
        (
            lambda s: s["predicate"]["serialization"].__setitem__("hash_type", "md5"),
            "unsupported hash type 'md5'",
        ),
        (lambda s: s["predicate"]["resources"].append(s["predicate"]["resources"][0]), "duplicate"),
        (lambda s: s["predicate"]["resources"].reverse(), "canonical order"),
        (lambda s: s["subject"][0]["digest"].__setitem__("sha256", "00" * 32), "inconsistent"),
        (lambda s: s["predicate"].__setitem__("resources", []), "resources: empty"),
        (lambda s: s["predicate"]["resources"][0].pop("digest"), "resources[0].digest"),
        (
            lambda s: s["predicate"]["resources"][0].__setitem__("digest", "AB" * 32),
            "lowercase hex",
        ),
        (
            lambda s: s["predicate"]["serialization"].__setitem__("allow_symlinks", "no"),
            "allow_symlinks",
        ),
        (lambda s: s.__setitem__("subject", []), "exactly one subject"),
    ],
)
def test_resigned_but_malformed_payloads_are_format_errors(
    model: Path, keypair: tuple[Path, Path], edit: object, message: str
) -> None:
    _resign(model, keypair, edit)
    with pytest.raises(FormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(model, None, KeyVerifier.from_file(keypair[1]))


def test_signature_for_another_model_is_rejected(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    from tests.signing.conftest import make_model

    first = make_model(tmp_path / "first")
    second = make_model(tmp_path / "second", weights_size=300_001)
    sign(first, KeySigner.from_file(keypair[0]))
    result = check(second, first / "model.sig", KeyVerifier.from_file(keypair[1]))
    assert not result.ok
    assert "model.safetensors" in result.changed


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"{", b"[1]", b'{"mediaType": 5}', b"\x00" * 100]
)
def test_malformed_signature_files(signed: tuple[Path, KeyVerifier], data: bytes) -> None:
    model, verifier = signed
    (model / "model.sig").write_bytes(data)
    with pytest.raises(FormatError):
        check(model, None, verifier)


def test_no_byte_flip_of_the_signature_file_verifies(signed: tuple[Path, KeyVerifier]) -> None:
    model, verifier = signed
    original = (model / "model.sig").read_bytes()
    for position in range(0, len(original), 11):
        mutated = bytearray(original)
        mutated[position] ^= 0x01
        (model / "model.sig").write_bytes(bytes(mutated))
        try:
            result = check(model, None, verifier)
        except FormatError:
            continue
        # Flips inside base64 padding-free spots may decode to the same bytes; those are fine
        # only if the decoded bundle is unchanged. Anything else must fail.
        assert not result.ok or _same_decoded(original, bytes(mutated)), position


def _same_decoded(a: bytes, b: bytes) -> bool:
    from weightvault.oms.bundle import parse_bundle

    x, y = parse_bundle(a), parse_bundle(b)
    return (x.verification_material, x.dsse_envelope) == (y.verification_material, y.dsse_envelope)


def test_missing_and_unusable_paths(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    signer = KeySigner.from_file(keypair[0])
    verifier = KeyVerifier.from_file(keypair[1])
    with pytest.raises(InputError, match="no such file or directory"):
        sign(tmp_path / "nope", signer)
    with pytest.raises(InputError, match="no such file or directory"):
        check(tmp_path / "nope", tmp_path / "x.sig", verifier)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        sign(tmp_path / "empty", signer)
    os.mkfifo(tmp_path / "fifo-model")
    with pytest.raises(InputError, match="not a regular file"):
        sign(tmp_path / "fifo-model", signer)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w").write_bytes(b"w")
    with pytest.raises(InputError, match="no such signature file"):
        check(tmp_path / "m", None, verifier)


def test_empty_files_count_in_shard_mode(model: Path, keypair: tuple[Path, Path]) -> None:
    """model-signing leaves empty files out of shard manifests; weightvault does not."""
    (model / "empty.txt").write_bytes(b"")
    sign(model, KeySigner.from_file(keypair[0]), serialization="shards")
    verifier = KeyVerifier.from_file(keypair[1])
    assert check(model, None, verifier).ok
    (model / "empty.txt").unlink()
    assert check(model, None, verifier).missing == ("empty.txt",)
    (model / "empty.txt").write_bytes(b"")
    (model / "also-empty").write_bytes(b"")
    assert check(model, None, verifier).extra == ("also-empty",)


def test_colon_in_names_with_shards(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "weights:v2.bin").write_bytes(b"x" * 1000)
    (model / "a:1:2").write_bytes(b"tricky")
    sign(model, KeySigner.from_file(keypair[0]), serialization="shards", shard_size=300)
    verifier = KeyVerifier.from_file(keypair[1])
    assert check(model, None, verifier).ok
    (model / "a:1:2").write_bytes(b"tricky!")
    assert check(model, None, verifier).changed == ("a:1:2",)


def test_symlink_inside_ignored_folder_does_not_abort(
    model: Path, keypair: tuple[Path, Path]
) -> None:
    (model / ".git").mkdir()
    os.symlink("/etc/hostname", model / ".git" / "link")
    (model / "cache").mkdir()
    os.symlink("/etc/hostname", model / "cache" / "link")
    sign(model, KeySigner.from_file(keypair[0]), ignore_paths=[model / "cache"])
    assert check(model, None, KeyVerifier.from_file(keypair[1])).ok


def test_signing_twice_and_signature_elsewhere(model: Path, keypair: tuple[Path, Path]) -> None:
    signer = KeySigner.from_file(keypair[0])
    verifier = KeyVerifier.from_file(keypair[1])
    sign(model, signer)
    sign(model, signer)  # the first signature is not part of the second
    assert check(model, None, verifier).ok
    (model / "sigs").mkdir()
    sign(model, signer, signature_path=model / "sigs" / "release.sig")
    assert check(model, model / "sigs" / "release.sig", verifier).ok


def test_single_file_model(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x00" * 1000)
    result = sign(weights, KeySigner.from_file(keypair[0]))
    assert result.signature_path == tmp_path / "model.sig"
    assert [r.name for r in result.manifest.resources] == ["."]
    verifier = KeyVerifier.from_file(keypair[1])
    assert check(weights, None, verifier).ok
    weights.write_bytes(b"\x00" * 999 + b"\x01")
    assert check(weights, None, verifier).changed == (".",)
    with pytest.raises(InputError, match="signature covers a single file"):
        check(tmp_path, tmp_path / "model.sig", verifier)


def test_key_material_errors(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    assert KeySigner.from_file(encrypted, "s3cret").identity.method == "key"
    with pytest.raises(KeyMaterialError, match="the private key is encrypted") as info:
        KeySigner.from_file(encrypted)
    assert info.value.remedy == "password"  # the CLI says "give its --password"
    with pytest.raises(KeyMaterialError, match="wrong password"):
        KeySigner.from_file(encrypted, "nope")
    with pytest.raises(KeyMaterialError, match="not encrypted"):
        KeySigner.from_file(keypair[0], "pw")
    with pytest.raises(KeyMaterialError, match="is a public key"):
        KeySigner.from_file(keypair[1])
    with pytest.raises(InputError, match="no such private key"):
        KeySigner.from_file(tmp_path / "missing.pem")
    for other in (
        rsa.generate_private_key(65537, 2048),
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256K1()),
    ):
        path = tmp_path / "other.pem"
        path.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(KeyMaterialError):
            KeySigner.from_file(path)
        with pytest.raises(KeyMaterialError):
            KeyVerifier.from_file(path)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_every_supported_curve_signs_with_its_hash(model: Path, curve: ec.EllipticCurve) -> None:
    from cryptography.hazmat.primitives import hashes

    from weightvault.oms.bundle import parse_bundle
    from weightvault.oms.dsse import pae

    key = ec.generate_private_key(curve)
    sign(model, KeySigner(key))
    assert check(model, None, KeyVerifier(key.public_key())).ok
    bundle = parse_bundle((model / "model.sig").read_bytes())
    expected = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[curve.key_size]
    key.public_key().verify(
        bundle.signatures[0].sig, pae(bundle.payload_type, bundle.payload), ec.ECDSA(expected)
    )


def test_model_path_given_as_symlink_is_an_input_error(
    signed: tuple[Path, KeyVerifier], tmp_path: Path
) -> None:
    model, verifier = signed
    link = tmp_path / "latest"
    os.symlink(model, link)
    with pytest.raises(InputError, match="model path is a symlink"):
        check(link, model / "model.sig", verifier)
