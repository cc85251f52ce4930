"""Operations on a real SoftHSM2 token: sign, read public keys, wrap/unwrap, and the errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.softhsm import SoftHsmToken, make_token

from weightvault.errors import DecryptionError, KeyMaterialError
from weightvault.keys import pkcs11 as p11
from weightvault.keys.pkcs11 import KeyKind, Pkcs11Session, Pkcs11Uri


@pytest.mark.parametrize(
    ("curve", "hash_cls"),
    [("P-256", hashes.SHA256), ("P-384", hashes.SHA384), ("P-521", hashes.SHA512)],
)
def test_ecdsa_signature_is_der_over_the_curves_hash(
    token: SoftHsmToken, curve: str, hash_cls: type[hashes.HashAlgorithm]
) -> None:
    uri = token.generate_ec_key("signer", curve=curve)
    public = p11.load_public_key(uri)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert (
        public.curve.name
        == {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}[curve]
    )
    signature = p11.sign_ecdsa(uri, b"payload")
    assert signature[0] == 0x30  # DER SEQUENCE, like cryptography's own ECDSA output
    public.verify(signature, b"payload", ec.ECDSA(hash_cls()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"payloaD", ec.ECDSA(hash_cls()))


def test_ed25519_is_supported_by_softhsm2_and_verifies(token: SoftHsmToken) -> None:
    uri = token.generate_ed25519_key("checkpoints")
    public = p11.load_public_key(uri)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    signature = p11.sign_ed25519(uri, b"checkpoint body\n")
    assert len(signature) == 64
    public.verify(signature, b"checkpoint body\n")
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"checkpoint body!")
    # Ed25519 is deterministic: the same message signs the same on the token.
    assert p11.sign_ed25519(uri, b"checkpoint body\n") == signature


def test_key_kinds_are_reported(token: SoftHsmToken) -> None:
    ec_uri = token.generate_ec_key("e", curve="P-384")
    ed_uri = token.generate_ed25519_key("d")
    kek_uri = token.generate_aes_kek("k")
    with Pkcs11Session(ec_uri) as session:
        assert session.key_kind() is KeyKind.EC_P384
    with Pkcs11Session(ed_uri) as session:
        assert session.key_kind() is KeyKind.ED25519
    with Pkcs11Session(kek_uri) as session:
        assert session.key_kind() is KeyKind.AES


def test_public_key_needs_no_pin(token: SoftHsmToken) -> None:
    token.generate_ec_key("signer")
    key = p11.load_public_key(token.uri_for("signer", with_pin=False))
    assert isinstance(key, ec.EllipticCurvePublicKey)


def test_pin_from_environment(token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch) -> None:
    token.generate_ec_key("signer")
    monkeypatch.setenv(p11.PIN_ENV, token.pin)
    assert p11.sign_ecdsa(token.uri_for("signer", with_pin=False), b"x")[0] == 0x30


def test_pin_from_pin_source_file(token: SoftHsmToken, tmp_path: Path) -> None:
    token.generate_ec_key("signer")
    pin_file = tmp_path / "pin.txt"
    pin_file.write_text(token.pin + "\n")
    uri = token.uri_for("signer", with_pin=False) + f"?pin-source=file:{pin_file}"
    assert p11.sign_ecdsa(uri, b"x")[0] == 0x30


def test_private_key_is_not_extractable(token: SoftHsmToken) -> None:
    import pkcs11

    token.generate_ec_key("signer")
    kek_uri = token.generate_aes_kek("kek")
    with Pkcs11Session(kek_uri) as session:
        kek = session.find_key("SECRET_KEY", purpose="test")
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = kek[pkcs11.Attribute.VALUE]
        assert kek[pkcs11.Attribute.EXTRACTABLE] is False
    with Pkcs11Session(token.uri_for("signer")) as session:
        private = session.find_key("PRIVATE_KEY", purpose="test")
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = private[pkcs11.Attribute.VALUE]


# --- key wrap -------------------------------------------------------------------------------------


def _import_known_kek(token: SoftHsmToken, label: str, value: bytes) -> str:
    """A KEK with a known value (non-extractable after import) to compare with cryptography."""
    import pkcs11

    attribute = pkcs11.Attribute
    with token.session() as session:
        session._session.create_object(
            {
                attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY,
                attribute.KEY_TYPE: pkcs11.KeyType.AES,
                attribute.VALUE: value,
                attribute.TOKEN: True,
                attribute.LABEL: label,
                attribute.WRAP: True,
                attribute.UNWRAP: True,
                attribute.SENSITIVE: True,
                attribute.EXTRACTABLE: False,
            }
        )
    return token.uri_for(label, type="secret-key")


def test_wrap_matches_rfc3394_and_rfc5649_as_cryptography_computes_them(
    token: SoftHsmToken,
) -> None:
    kek_value = bytes(range(32))
    uri = _import_known_kek(token, "known", kek_value)
    dek = bytes(range(100, 132))
    wrapped_kw = p11.wrap_key(uri, dek, pad=False)
    assert wrapped_kw == keywrap.aes_key_wrap(kek_value, dek)
    wrapped_kwp = p11.wrap_key(uri, dek, pad=True)
    assert wrapped_kwp == keywrap.aes_key_wrap_with_padding(kek_value, dek)
    assert p11.unwrap_key(uri, wrapped_kw, pad=False) == dek
    assert p11.unwrap_key(uri, wrapped_kwp) == dek
    # Blobs made outside the token (any length with padding) unwrap on it.
    for size in (1, 5, 8, 20, 33):
        secret = bytes([size]) * size
        assert p11.unwrap_key(uri, keywrap.aes_key_wrap_with_padding(kek_value, secret)) == secret


def test_rfc3394_known_answer_vector(token: SoftHsmToken) -> None:
    # RFC 3394 section 4.6: 256-bit KEK wrapping 256 bits of key data.
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
    data = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    expected = bytes.fromhex(
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
    )
    uri = _import_known_kek(token, "rfc3394", kek)
    assert p11.wrap_key(uri, data, pad=False) == expected
    assert p11.unwrap_key(uri, expected, pad=False) == data


def test_softhsm_padding_quirk_is_caught_not_passed_on(token: SoftHsmToken) -> None:
    # SoftHSM2 2.6 zero-pads a 5-byte secret before RFC 5649 wrapping (measured): refuse it.
    uri = token.generate_aes_kek("kek")
    with pytest.raises(KeyMaterialError, match="RFC 5649"):
        p11.wrap_key(uri, b"12345")


def test_unwrap_failures_are_uniform(token: SoftHsmToken) -> None:
    uri = token.generate_aes_kek("kek")
    other = token.generate_aes_kek("other")
    dek = bytes(32)
    wrapped = p11.wrap_key(uri, dek)
    messages = set()
    candidates = [
        (other, wrapped),
        (uri, wrapped[:-8]),
        (uri, wrapped[:-1]),
        (uri, wrapped + b"\x00" * 8),
        (uri, b""),
    ]
    for index in range(len(wrapped)):
        flipped = bytearray(wrapped)
        flipped[index] ^= 0x01
        candidates.append((uri, bytes(flipped)))
    for kek_uri, blob in candidates:
        with pytest.raises(DecryptionError) as info:
            p11.unwrap_key(kek_uri, blob)
        messages.add(info.value.one_line())
    assert len(messages) == 1


def test_session_batches_operations(token: SoftHsmToken) -> None:
    uri = token.generate_aes_kek("kek")
    with Pkcs11Session(uri) as session:
        deks = [bytes([i]) * 32 for i in range(20)]
        blobs = [session.wrap_key(dek) for dek in deks]
        assert [session.unwrap_key(blob) for blob in blobs] == deks


def test_threads_each_with_a_session(token: SoftHsmToken) -> None:
    uri = token.generate_ec_key("signer")
    public = p11.load_public_key(uri)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                message = f"m{i}".encode()
                public.verify(p11.sign_ecdsa(uri, message), message, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- errors ---------------------------------------------------------------------------------------


def _error(call: object) -> str:
    assert callable(call)
    with pytest.raises(KeyMaterialError) as info:
        call()
    line = info.value.one_line()
    assert "\n" not in line
    return line


def test_wrong_pin(token: SoftHsmToken) -> None:
    token.generate_ec_key("signer")
    uri = Pkcs11Uri(token=token.label, object="signer", pin_value="99999999")
    line = _error(lambda: p11.sign_ecdsa(uri, b"x"))
    assert "wrong PIN" in line
    assert "99999999" not in line


def test_no_pin_for_a_private_operation(token: SoftHsmToken) -> None:
    token.generate_ec_key("signer")
    line = _error(lambda: p11.sign_ecdsa(token.uri_for("signer", with_pin=False), b"x"))
    assert "needs the user PIN" in line


def test_token_not_found_lists_present_tokens(token: SoftHsmToken) -> None:
    uri = Pkcs11Uri(token="no-such-token", object="k", pin_value="1234")
    line = _error(lambda: p11.sign_ecdsa(uri, b"x"))
    assert "token not found" in line
    assert repr(token.label) in line


def test_module_missing(token: SoftHsmToken, tmp_path: Path) -> None:
    uri = Pkcs11Uri(token=token.label, object="k", module_path=str(tmp_path / "nope.so"))
    line = _error(lambda: p11.sign_ecdsa(uri, b"x"))
    assert "module not found" in line


def test_module_not_a_pkcs11_library(token: SoftHsmToken, tmp_path: Path) -> None:
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"not an ELF file")
    uri = Pkcs11Uri(token=token.label, object="k", module_path=str(fake))
    assert "could not be loaded" in _error(lambda: p11.sign_ecdsa(uri, b"x"))


def test_key_not_found(token: SoftHsmToken) -> None:
    token.generate_ec_key("signer")
    line = _error(lambda: p11.sign_ecdsa(token.uri_for("missing"), b"x"))
    assert "key not found" in line and "'missing'" in line
    line = _error(lambda: p11.sign_ecdsa(token.uri_for("signer", key_id=b"\x09"), b"x"))
    assert "key not found" in line


def test_uri_naming_no_key(token: SoftHsmToken) -> None:
    assert "names no key" in _error(lambda: p11.sign_ecdsa(token.uri_for(), b"x"))


@pytest.mark.parametrize(
    ("make", "operation", "expected"),
    [
        ("ed", "ecdsa", "is an Ed25519 key; ECDSA signing needs an EC P-256/P-384/P-521 key"),
        ("ec", "ed25519", "is an EC P-256 key; Ed25519 signing needs an Ed25519 key"),
        ("kek", "ecdsa", "is a secret-key object, but ECDSA signing needs a private key"),
        ("ec", "wrap", "is a private/public object, but key wrapping needs a secret key"),
    ],
)
def test_key_of_the_wrong_type(
    token: SoftHsmToken, make: str, operation: str, expected: str
) -> None:
    {"ed": token.generate_ed25519_key, "ec": token.generate_ec_key, "kek": token.generate_aes_kek}[
        make
    ]("key")
    uri = token.uri_for("key")
    call = {
        "ecdsa": lambda: p11.sign_ecdsa(uri, b"x"),
        "ed25519": lambda: p11.sign_ed25519(uri, b"x"),
        "wrap": lambda: p11.wrap_key(uri, bytes(32)),
    }[operation]
    assert expected in _error(call)


def test_type_attribute_conflicting_with_the_operation(token: SoftHsmToken) -> None:
    token.generate_ec_key("signer")
    line = _error(lambda: p11.sign_ecdsa(token.uri_for("signer", type="secret-key"), b"x"))
    assert "type=secret-key" in line


def test_ambiguous_label(token: SoftHsmToken) -> None:
    token.generate_ec_key("dup", key_id=b"\x01")
    token.generate_ec_key("dup", key_id=b"\x02")
    assert "add id=" in _error(lambda: p11.sign_ecdsa(token.uri_for("dup"), b"x"))
    assert p11.sign_ecdsa(token.uri_for("dup", key_id=b"\x02"), b"x")[0] == 0x30


def test_two_tokens_in_one_store_are_told_apart(token: SoftHsmToken, tmp_path: Path) -> None:
    second = make_token(tmp_path, "second")
    first_uri = token.generate_ec_key("signer")
    second_uri = second.generate_ec_key("signer")
    first_public = p11.load_public_key(first_uri)
    assert isinstance(first_public, ec.EllipticCurvePublicKey)
    signature = p11.sign_ecdsa(second_uri, b"m")
    with pytest.raises(InvalidSignature):
        first_public.verify(signature, b"m", ec.ECDSA(hashes.SHA256()))
    # Without token= the URI is ambiguous.
    line = _error(lambda: p11.sign_ecdsa(Pkcs11Uri(object="signer", pin_value="1234"), b"m"))
    assert "matches 2 tokens" in line


def test_overlapping_sessions_share_one_login(token: SoftHsmToken) -> None:
    uri = token.generate_ec_key("signer")
    with Pkcs11Session(uri) as outer:
        with Pkcs11Session(uri) as inner:
            assert inner.sign_ecdsa(b"a")[0] == 0x30
        # Closing the inner session must not log the outer one out.
        assert outer.sign_ecdsa(b"b")[0] == 0x30
        # While logged in, a different PIN is still refused (no riding on another login).
        bad = Pkcs11Uri(token=token.label, object="signer", pin_value="00000000")
        assert "wrong PIN" in _error(lambda: Pkcs11Session(bad))
    # Everything closed: the token is logged out again, so private keys are hidden.
    with Pkcs11Session(token.uri_for("signer", with_pin=False)) as anonymous:
        assert "no PIN was given" in _error(
            lambda: anonymous.find_key("PRIVATE_KEY", purpose="signing")
        )


def test_closed_session_refuses_use(token: SoftHsmToken) -> None:
    uri = token.generate_ec_key("signer")
    session = Pkcs11Session(uri)
    session.close()
    session.close()
    with pytest.raises(ValueError, match="closed"):
        session.sign_ecdsa(b"x")
