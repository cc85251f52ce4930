"""``vault pull`` is all or nothing: a wrong identity, an exhausted budget or a digest that does
not match leaves no file (ciphertext included) and says so; only a broken connection keeps the
encrypted parts, to resume."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.custody.helpers import World, build_world, start_service

from weightvault.cli.app import run
from weightvault.crypt import KeyringKey
from weightvault.custody.client import VaultHTTPError
from weightvault.errors import DecryptionError, PolicyError


def _listing(root: Path) -> list[str]:
    """Every name under ``root``, hidden ones and folders included."""
    return sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, subdirs, files in os.walk(root)
        for n in subdirs + files
    )


def test_a_wrong_identity_is_refused_before_anything_is_downloaded(
    world: World, tmp_path: Path
) -> None:
    grant_id = world.granted("rita")
    with world.client("rita") as client:
        used_before = client.grant_files(grant_id)["bytes_remaining"]
        with pytest.raises(DecryptionError, match="not the X25519 recipient") as info:
            client.pull(grant_id, tmp_path / "out", world.people["ravi"].identity)
        assert "nothing was downloaded" in info.value.one_line()
        assert client.grant_files(grant_id)["bytes_remaining"] == used_before  # no egress spent
    assert _listing(tmp_path) == []


def test_an_identity_that_cannot_open_the_files_leaves_no_ciphertext(
    world: World, tmp_path: Path
) -> None:
    """An identity the client cannot compare up front (not X25519) fails on the first file:
    the ``.wvenc`` files already downloaded go too (they used to stay behind)."""
    grant_id = world.granted("rita")
    (tmp_path / "out").mkdir()
    with world.client("rita") as client, pytest.raises(DecryptionError) as info:
        client.pull(grant_id, tmp_path / "out", KeyringKey(os.urandom(32)))
    assert "nothing was kept" in info.value.one_line()
    assert _listing(tmp_path) == ["out"]  # the folder existed before: it stays, empty


def test_a_grant_budget_too_small_is_refused_before_downloading(
    world: World, tmp_path: Path
) -> None:
    grant_id = world.granted("rita", budget=1000)
    with world.client("rita") as client, pytest.raises(PolicyError) as info:
        client.pull(grant_id, tmp_path / "out", world.people["rita"].identity)
    line = info.value.one_line()
    assert "byte budget is exhausted (1000 bytes left" in line
    assert line.endswith("nothing was downloaded")
    assert _listing(tmp_path) == []


@pytest.fixture
def tight_budget(tmp_path: Path) -> Iterator[World]:
    """A service whose per-principal window budget (400 KB) holds one pull of the model, not
    two: the second is refused after its first file was delivered."""
    service = start_service(tmp_path / "data", args=("--principal-budget", "400K"))
    try:
        (tmp_path / "world").mkdir()
        yield build_world(tmp_path / "world", service)
    finally:
        service.stop()


def test_a_budget_that_runs_out_during_a_pull_leaves_nothing_and_says_so(
    tight_budget: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    world = tight_budget
    grant_id = world.granted("rita")
    with world.client("rita") as client:
        client.pull(grant_id, tmp_path / "first", world.people["rita"].identity)
        first_files = client.grant_files(grant_id)["files"]
    assert len(first_files) == 2
    out = tmp_path / "second"
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WEIGHTVAULT_URL", world.service.url)
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["rita"].token)
    identity = world.people["rita"].identity_path
    assert identity is not None
    code = run(["vault", "pull", grant_id, "-o", str(out), "--identity", str(identity)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "principal byte budget is exhausted" in err and err.rstrip().endswith("nothing was kept")
    assert not out.exists()
    with world.client("audrey") as auditor:
        refused = [a for a in auditor.alerts() if a["kind"] == "budget.exhausted"]
    assert refused, "the second file was refused by the service, not skipped by the client"


def test_pull_without_identity_keeps_only_complete_ciphertext(world: World, tmp_path: Path) -> None:
    grant_id = world.granted("rita")
    with world.client("rita") as client:
        result = client.pull(grant_id, tmp_path / "enc", None)
    names = _listing(tmp_path / "enc")
    assert names == sorted(f["path"] for f in result["files"])
    assert all(n.endswith(".wvenc") for n in names)


def test_refusals_do_not_create_the_output_folder(world: World, tmp_path: Path) -> None:
    grant_id = world.granted("rita")
    with world.client("olivia") as owner:
        owner.revoke(grant_id)
    with world.client("rita") as client, pytest.raises(VaultHTTPError):
        client.pull(grant_id, tmp_path / "out" / "deeper", world.people["rita"].identity)
    assert _listing(tmp_path) == []
