"""RFC 7512 URI parsing: strict, errors name the attribute, PINs never leak."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightvault.errors import KeyMaterialError
from weightvault.keys.pkcs11 import DEFAULT_MODULE, MODULE_ENV, PIN_ENV, Pkcs11Uri, redacted_uri


def test_parses_every_supported_attribute() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=My%20Token;manufacturer=SoftHSM%20project;serial=947169762f450559;"
        "model=SoftHSM%20v2;library-manufacturer=SoftHSM;library-description=Implementation;"
        "library-version=2.6;object=release%3Bkey;type=private;id=%01%02%ff;"
        "slot-manufacturer=SoftHSM;slot-description=slot;slot-id=7"
        "?pin-value=12%2634&module-name=softhsm2&module-path=/usr/lib/softhsm"
    )
    assert uri.token == "My Token"
    assert uri.manufacturer == "SoftHSM project"
    assert uri.serial == "947169762f450559"
    assert uri.model == "SoftHSM v2"
    assert uri.library_version == "2.6"
    assert uri.object == "release;key"
    assert uri.type == "private"
    assert uri.id == b"\x01\x02\xff"
    assert uri.slot_id == 7
    assert uri.pin_value == "12&34"
    assert uri.module_name == "softhsm2"
    assert uri.module_path == "/usr/lib/softhsm"


def test_round_trips_through_format() -> None:
    text = "pkcs11:token=a%20b;object=k;type=private;id=%0a%ff?pin-value=9%3B9&module-path=%2Fx"
    uri = Pkcs11Uri.parse(text)
    assert Pkcs11Uri.parse(uri.format(include_pin=True)) == uri


def test_pin_never_in_str_repr_or_default_format() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=t;object=k?pin-value=s3cr3t-pin")
    for text in (str(uri), repr(uri), uri.format(), uri.describe_object(), uri.describe_token()):
        assert "s3cr3t" not in text
    assert "s3cr3t-pin" in uri.format(include_pin=True)


def test_redacted_uri_for_messages() -> None:
    assert redacted_uri("pkcs11:token=t;object=k?pin-value=hunter2") == "pkcs11:token=t;object=k"
    assert redacted_uri("pkcs11:token=t;bogus=1?pin-value=hunter2") == "pkcs11:<malformed URI>"


def test_empty_path_is_allowed() -> None:
    assert Pkcs11Uri.parse("pkcs11:") == Pkcs11Uri()
    assert Pkcs11Uri.parse("PKCS11:token=x").token == "x"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("pkcs11:token=a;token=b", "'token'"),
        ("pkcs11:tokn=a", "'tokn'"),
        ("pkcs11:x-vendor=1", "'x-vendor'"),
        ("pkcs11:token=a?pin-value=1&pin-value=2", "'pin-value'"),
        ("pkcs11:token=a?pin-value=1&pin-source=/f", "'pin-value'"),
        ("pkcs11:pin-value=1", "'pin-value'"),
        ("pkcs11:token=a?object=k", "'object'"),
        ("pkcs11:type=secret", "'type'"),
        ("pkcs11:slot-id=-1", "'slot-id'"),
        ("pkcs11:slot-id=1x", "'slot-id'"),
        ("pkcs11:library-version=two", "'library-version'"),
        ("pkcs11:id=%zz", "'id'"),
        ("pkcs11:id=%4", "'id'"),
        ("pkcs11:object=", "'object'"),
        ("pkcs11:object", "'object'"),
        ("pkcs11:object=a b", "'object'"),
        ("pkcs11:object=%ff%fe", "'object'"),
        ("pkcs11:object=a%00b", "'object'"),
        ("pkcs11:object=a#frag", "'#'"),
    ],
)
def test_rejects_malformed_uris_naming_the_attribute(text: str, named: str) -> None:
    with pytest.raises(KeyMaterialError) as info:
        Pkcs11Uri.parse(text)
    assert named in info.value.one_line()
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize("text", ["", "pkcs12:token=a", "token=a", "file:/x", "x" * 5000])
def test_rejects_non_pkcs11_text(text: str) -> None:
    with pytest.raises(KeyMaterialError):
        Pkcs11Uri.parse(text)


@given(st.text(max_size=200))
def test_parser_never_raises_anything_else(text: str) -> None:
    try:
        uri = Pkcs11Uri.parse("pkcs11:" + text)
    except KeyMaterialError as exc:
        assert "\n" not in exc.one_line()
    else:
        assert Pkcs11Uri.parse(uri.format(include_pin=True)) == uri


@given(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.binary(min_size=1, max_size=20),
)
def test_any_label_and_id_round_trip(label: str, key_id: bytes) -> None:
    uri = Pkcs11Uri(token=label, object=label, id=key_id, pin_value=label)
    assert Pkcs11Uri.parse(uri.format(include_pin=True)) == uri


def test_pin_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\nignored second line\n")
    monkeypatch.setenv(PIN_ENV, "from-env")
    assert Pkcs11Uri.parse("pkcs11:?pin-value=v").resolve_pin("arg") == "arg"
    assert Pkcs11Uri.parse("pkcs11:?pin-value=v").resolve_pin() == "v"
    assert Pkcs11Uri.parse(f"pkcs11:?pin-source={pin_file}").resolve_pin() == "from-file"
    assert Pkcs11Uri.parse(f"pkcs11:?pin-source=file:{pin_file}").resolve_pin() == "from-file"
    assert Pkcs11Uri.parse(f"pkcs11:?pin-source=file://{pin_file}").resolve_pin() == "from-file"
    assert Pkcs11Uri.parse("pkcs11:").resolve_pin() == "from-env"
    monkeypatch.delenv(PIN_ENV)
    assert Pkcs11Uri.parse("pkcs11:").resolve_pin() is None


@pytest.mark.parametrize(
    "source", ["|/bin/echo 1234", "https://example.com/pin", "file://otherhost/pin"]
)
def test_pin_source_refuses_programs_and_remote(source: str) -> None:
    uri = Pkcs11Uri(pin_source=source)
    with pytest.raises(KeyMaterialError, match="pin-source"):
        uri.resolve_pin()


def test_pin_source_file_problems_are_one_line_without_the_pin(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot be read"):
        Pkcs11Uri(pin_source=str(tmp_path / "missing")).resolve_pin()
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(KeyMaterialError, match="is empty"):
        Pkcs11Uri(pin_source=str(empty)).resolve_pin()
    big = tmp_path / "big"
    big.write_text("9" * 5000)
    with pytest.raises(KeyMaterialError, match="too large") as info:
        Pkcs11Uri(pin_source=str(big)).resolve_pin()
    assert "9999" not in info.value.one_line()


def test_module_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODULE_ENV, raising=False)
    assert Pkcs11Uri().resolve_module() == DEFAULT_MODULE
    monkeypatch.setenv(MODULE_ENV, "/opt/hsm/libvendor.so")
    assert Pkcs11Uri().resolve_module() == "/opt/hsm/libvendor.so"
    assert Pkcs11Uri(module_path="/x/lib.so").resolve_module() == "/x/lib.so"
    (tmp_path / "libvendor.so").write_bytes(b"")
    uri = Pkcs11Uri(module_path=str(tmp_path), module_name="vendor")
    assert uri.resolve_module() == str(tmp_path / "libvendor.so")
    with pytest.raises(KeyMaterialError, match="module-name"):
        Pkcs11Uri(module_path=str(tmp_path)).resolve_module()
    with pytest.raises(KeyMaterialError, match="'nothere' not found"):
        Pkcs11Uri(module_path=str(tmp_path), module_name="nothere").resolve_module()
