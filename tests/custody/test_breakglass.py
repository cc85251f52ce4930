"""Shamir break-glass over GF(2^8): field arithmetic, k-of-n recovery, authentication of the
result, and recovering the service KEK so a restarted service can still release weights."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.custody.helpers import build_world, start_service

from weightvault.cli.app import run
from weightvault.custody.breakglass import Share, gf_div, gf_mul, recover, split
from weightvault.errors import FormatError, UsageError, VerificationError


def _slow_mul(a: int, b: int) -> int:
    """Carry-less multiplication reduced by x^8 + x^4 + x^3 + x + 1, bit by bit."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return result


def test_field_multiplication_matches_the_bitwise_definition_everywhere() -> None:
    assert gf_mul(0x57, 0x83) == 0xC1  # FIPS-197 section 4.2 example
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == _slow_mul(a, b)


def test_division_inverts_multiplication() -> None:
    for a in range(256):
        for b in range(1, 256):
            assert gf_div(gf_mul(a, b), b) == a
    with pytest.raises(ZeroDivisionError):
        gf_div(1, 0)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=64),
    threshold=st.integers(2, 5),
    extra=st.integers(0, 3),
    data=st.data(),
)
def test_any_k_shares_recover_the_secret(
    secret: bytes, threshold: int, extra: int, data: st.DataObject
) -> None:
    shares = split(secret, threshold, threshold + extra)
    chosen = data.draw(st.permutations(shares))[:threshold]
    assert recover(chosen) == secret
    text = [Share.from_text(s.to_text()) for s in chosen]
    assert recover(text) == secret


def test_every_k_subset_of_five_recovers() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, 5)
    for subset in itertools.combinations(shares, 3):
        assert recover(list(subset)) == secret


def test_too_few_duplicated_mixed_or_altered_shares_are_refused() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, 5)
    with pytest.raises(UsageError, match="3 needed"):
        recover(shares[:2])
    with pytest.raises(UsageError, match="twice"):
        recover([shares[0], shares[0], shares[1]])
    other = split(secret, 3, 5)
    with pytest.raises(VerificationError, match="different splits"):
        recover([shares[0], shares[1], other[2]])
    for position in range(len(shares[2].data)):
        altered = bytearray(shares[2].data)
        altered[position] ^= 0x01
        bad = Share(
            shares[2].split_id,
            3,
            5,
            shares[2].x,
            bytes(altered),
            shares[2].commitment,
        )
        with pytest.raises(VerificationError, match="do not reconstruct"):
            recover([shares[0], shares[1], bad])
    with pytest.raises(VerificationError):
        # a share moved to another x reconstructs a different polynomial
        moved = Share(shares[2].split_id, 3, 5, 4, shares[2].data, shares[2].commitment)
        recover([shares[0], shares[1], moved])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "wvshare1:zz",
        "wvshare1:0011223344556677:3:5:9:aabb:" + "00" * 32,  # x > n
        "wvshare1:0011223344556677:1:5:1:aabb:" + "00" * 32,  # k < 2
        "wvshare1:0011223344556677:3:5:1:AABB:" + "00" * 32,  # upper-case hex
        "wvshare1:0011223344556677:03:5:1:aabb:" + "00" * 32,  # non-canonical number
    ],
)
def test_malformed_shares_are_refused(text: str) -> None:
    with pytest.raises(FormatError):
        Share.from_text(text)


def test_bad_split_parameters_are_refused() -> None:
    with pytest.raises(UsageError):
        split(os.urandom(32), 1, 3)
    with pytest.raises(UsageError):
        split(os.urandom(32), 4, 3)
    with pytest.raises(UsageError):
        split(b"short", 2, 3)


def test_recovered_kek_lets_a_restarted_service_release_weights(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    world = build_world(tmp_path, service)
    grant_id = world.granted("rita")
    service.stop()
    kek = service.data_dir / "service-kek.keyring"
    shares_dir = tmp_path / "shares"
    assert (
        run(["breakglass", "split", "--kek", str(kek), "-k", "3", "-n", "5", "-o", str(shares_dir)])
        == 0
    )
    original = kek.read_text()
    kek.unlink()  # the KEK is lost; three officers bring their shares
    recovered = tmp_path / "recovered.keyring"
    shares = [str(shares_dir / f"share-{i}.txt") for i in (5, 2, 4)]
    assert run(["breakglass", "recover", *shares, "-o", str(recovered)]) == 0
    assert oct(recovered.stat().st_mode & 0o777) == "0o600"
    assert original.splitlines()[-1] == recovered.read_text().splitlines()[-1]
    assert run(["breakglass", "recover", *shares[:2], "-o", str(tmp_path / "x")]) == 2
    restarted = start_service(
        service.data_dir,
        args=("--kek", f"keyring:{recovered}"),
        init_admin=False,
        admin_token=service.admin_token,
    )
    try:
        with restarted.client(world.people["rita"].token) as client:
            client.pull(grant_id, tmp_path / "out", world.people["rita"].identity)
        assert world.model_dir is not None
        assert (tmp_path / "out" / "config.json").read_bytes() == (
            world.model_dir / "config.json"
        ).read_bytes()
    finally:
        restarted.stop()
