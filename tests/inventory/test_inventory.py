"""Inventory against a real custody deployment: every kind of copy found, strays told apart from
approved copies, nothing executed or decrypted to disk, results independent of worker count."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from safetensors.numpy import load_file, save_file
from tests.custody.helpers import make_model, public_pem, sign_model, start_service

from weightvault.cli.app import run
from weightvault.crypt import FileContext, KeyringKey, encrypt_file
from weightvault.custody.config import ServiceConfig
from weightvault.inventory import custody_references, sniff, take_inventory


@dataclass
class Custody:
    root: Path
    data: Path
    model: Path
    signature: Path

    @property
    def config(self) -> ServiceConfig:
        return ServiceConfig(data_dir=self.data)


@pytest.fixture(scope="module")
def custody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Custody]:
    root = tmp_path_factory.mktemp("inventory")
    data = root / "custody"
    service = start_service(data)
    try:
        with service.admin as admin:
            approver = ed25519.Ed25519PrivateKey.generate()
            admin.create_principal("alice", ["approver"], approval_key_pem=public_pem(approver))
            olivia = admin.create_principal("olivia", ["owner"])["token"]
        key = ec.generate_private_key(ec.SECP256R1())
        model = make_model(root / "llama-v1", megabytes=0.5)
        signature = sign_model(model, key)
        policy = {
            "approvers": ["alice"],
            "approvals_required": 1,
            "signers": [{"name": "release", "public_key_pem": public_pem(key)}],
        }
        with service.client(olivia) as client:
            client.create_model("llama", policy)
            client.push("llama", "v1", model, signature.read_bytes())
    finally:
        service.stop()
    (root / "release.pub").write_text(public_pem(key))
    yield Custody(root, data, model, signature)


def _tree(custody: Custody, folder: Path) -> dict[str, Path]:
    """Every kind of copy, and things that are not copies, under ``folder``."""
    folder.mkdir()
    (folder / "approved").mkdir()
    (folder / "laptop" / "deep").mkdir(parents=True)
    tensors = load_file(str(custody.model / "model.safetensors"))
    paths = {
        "exact": folder / "laptop" / "deep" / "weights-final.safetensors",
        "approved": folder / "approved" / "model.safetensors",
        "config": folder / "laptop" / "config.json",
        "resaved": folder / "laptop" / "renamed.safetensors",
        "torch": folder / "laptop" / "pytorch_model.bin",
        "partial": folder / "laptop" / "embeddings-only.safetensors",
        "small": folder / "laptop" / "bias-only.safetensors",
        "stolen-blob": folder / "laptop" / "0.wvenc",
        "encrypted": folder / "laptop" / "model.safetensors.wvenc",
        "unknown": folder / "laptop" / "other-model.safetensors",
        "garbage": folder / "laptop" / "broken.safetensors",
    }
    shutil.copy(custody.model / "model.safetensors", paths["exact"])
    shutil.copy(custody.model / "model.safetensors", paths["approved"])
    shutil.copy(custody.model / "config.json", paths["config"])
    # Re-saved: other names, other order, metadata: another file with the same tensors.
    save_file(
        {f"model.{name}": value for name, value in reversed(tensors.items())},
        str(paths["resaved"]),
        metadata={"format": "pt"},
    )
    import torch

    torch.save({name: torch.from_numpy(value) for name, value in tensors.items()}, paths["torch"])
    save_file({"embed": tensors["embed.weight"]}, str(paths["partial"]))
    save_file({"bias": tensors["head.bias"]}, str(paths["small"]))
    blob = next((custody.data / "blobs").rglob("*.wvenc"))
    shutil.copy(blob, paths["stolen-blob"])
    manifest = "sha256:" + hashlib.sha256(custody.signature.read_bytes()).hexdigest()
    context = FileContext("llama", "model.safetensors", 0, 2, "0" * 32, manifest)
    encrypt_file(
        custody.model / "model.safetensors", paths["encrypted"], context,
        [KeyringKey(os.urandom(32))],
    )  # fmt: skip
    rng = np.random.default_rng(7)
    save_file({"w": rng.standard_normal((64, 64), dtype=np.float32)}, str(paths["unknown"]))
    paths["garbage"].write_bytes((40).to_bytes(8, "little") + b"{not json" + b"\0" * 100)
    (folder / "laptop" / "link.safetensors").symlink_to(paths["exact"])
    (folder / "laptop" / "notes.txt").write_text("not weights\n")
    return paths


def test_finds_every_kind_of_copy_and_tells_strays_from_approved(
    custody: Custody, tmp_path: Path
) -> None:
    paths = _tree(custody, tmp_path / "tree")
    refs = custody_references(custody.config)
    report = take_inventory([tmp_path / "tree"], refs, approved=[tmp_path / "tree" / "approved"])
    by_path = {f.path: f for f in report.findings}
    expected = {
        "exact": ("exact-copy", True),
        "approved": ("exact-copy", False),
        "config": ("exact-copy", True),
        "resaved": ("resaved-copy", True),
        "torch": ("resaved-copy", True),
        "partial": ("partial-copy", True),
        "small": ("unknown-weights", True),
        "stolen-blob": ("encrypted-copy", True),
        "encrypted": ("encrypted-copy", True),
        "unknown": ("unknown-weights", True),
        "garbage": ("unknown-weights", True),
    }
    for name, (kind, stray) in expected.items():
        finding = by_path[paths[name]]
        assert (finding.kind, finding.stray) == (kind, stray), name
    assert set(by_path) == set(paths.values())  # the symlink and notes.txt are not findings
    exact = by_path[paths["exact"]]
    assert exact.matches[0] == {"model": "llama", "version": "v1", "path": "model.safetensors"}
    assert exact.sha256 == hashlib.sha256(paths["exact"].read_bytes()).hexdigest()
    resaved = by_path[paths["torch"]].matches[0]
    assert (resaved["tensors"], resaved["of"], resaved["byte_fraction"]) == (2, 2, 1.0)
    assert by_path[paths["partial"]].matches[0]["tensors"] == 1
    assert by_path[paths["encrypted"]].matches[0]["path"] == "model.safetensors"
    assert len(report.stray_copies) == 7


def test_results_do_not_depend_on_the_number_of_workers(custody: Custody, tmp_path: Path) -> None:
    _tree(custody, tmp_path / "tree")
    refs = custody_references(custody.config)
    one = take_inventory([tmp_path / "tree"], refs, workers=1)
    two = take_inventory([tmp_path / "tree"], custody_references(custody.config), workers=2)
    assert [f.to_json() for f in one.findings] == [f.to_json() for f in two.findings]


def test_without_the_kek_resaved_copies_are_not_looked_for(
    custody: Custody, tmp_path: Path
) -> None:
    paths = _tree(custody, tmp_path / "tree")
    refs = custody_references(custody.config, tensors=False)
    report = take_inventory([tmp_path / "tree"], refs)
    by_path = {f.path: f for f in report.findings}
    assert by_path[paths["resaved"]].kind == "unknown-weights"
    assert by_path[paths["exact"]].kind == "exact-copy"
    assert report.tensor_note == "not looked for: tensor matching was turned off"


def test_custody_blobs_are_approved_and_stay_encrypted(custody: Custody, tmp_path: Path) -> None:
    """Walking the data folder itself: its blobs are the registered encrypted copies (approved);
    tensor matching decrypts in memory only (no new file appears anywhere under it)."""
    before = sorted(p for p in custody.data.rglob("*"))
    tree = tmp_path / "tree"
    tree.mkdir()
    save_file({"model.embed": load_file(str(custody.model / "model.safetensors"))["embed.weight"]},
              str(tree / "copy.safetensors"))  # fmt: skip
    report = take_inventory(
        [custody.data, tree], custody_references(custody.config), home=custody.data
    )
    blobs = [f for f in report.findings if custody.data in f.path.parents]
    assert blobs and all(f.kind == "encrypted-copy" and f.approved for f in blobs)
    assert sorted(p for p in custody.data.rglob("*")) == before
    assert [f.kind for f in report.findings if f.path.parent == tree] == ["partial-copy"]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_never_executed(custody: Custody, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    marker = tmp_path / "pwned"
    (tree / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    import torch

    evil = tree / "evil.pt"
    torch.save({"embed.weight": torch.zeros(4), "x": _Payload(marker)}, evil)
    report = take_inventory([tree], custody_references(custody.config))
    assert {f.kind for f in report.findings} == {"unknown-weights"}
    assert not marker.exists()


def test_sniffing_knows_the_weight_formats() -> None:
    assert sniff((8).to_bytes(8, "little") + b'{"a":1} ', 16, "x") == "safetensors"
    assert sniff(b"GGUF\x03\x00", 100, "m.gguf") == "gguf"
    assert sniff(b"\x93NUMPY\x01\x00", 100, "a.npy") == "numpy"
    assert sniff(b"PK\x03\x04" + b"\0" * 26 + b"archive/data.pkl", 100, "model") == "pytorch-zip"
    assert sniff(b"PK\x03\x04", 100, "docs.zip") is None
    assert sniff(b"\x80\x04\x95", 100, "state.pkl") == "pickle"
    assert sniff(b"\x80\x04\x95", 100, "notes") is None
    assert sniff(b"WVENC\x00\x00\x01", 100, "f") == "weightvault-encrypted"
    assert sniff(b"hello", 5, "a.txt") is None
    # A safetensors-looking header whose length runs past the file is not safetensors.
    assert sniff((1000).to_bytes(8, "little") + b"{", 20, "x") is None


def test_cli_json_and_exit_codes(
    custody: Custody, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _tree(custody, tmp_path / "tree")
    base = ["inventory", str(tmp_path / "tree" / "approved"), "--data", str(custody.data)]
    assert run([*base, "--approved", str(tmp_path / "tree" / "approved")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("approved exact-copy of llama@v1:model.safetensors")
    assert run(["inventory", str(tmp_path / "tree"), "--data", str(custody.data), "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["stray_copies"] == 8 and doc["references"]["tensor_matching"] == "on"
    assert "8 copies of known models outside the approved folders" in captured.err
    assert {f["path"] for f in doc["findings"]} == {str(p) for p in paths.values()}
    assert run(["inventory", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert run(["inventory", str(tmp_path), "--no-tensors"]) == 2
    assert run(["inventory", str(tmp_path / "tree"), "--data", str(tmp_path)]) == 2
    assert "not a custody data folder" in capsys.readouterr().err


def test_fifos_symlinks_and_vanishing_files_do_not_stop_the_walk(
    custody: Custody, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe.safetensors")  # opening it would block: it must not be opened
    (tree / "loop").symlink_to(tree)
    shutil.copy(custody.model / "model.safetensors", tree / "a.safetensors")
    shutil.copy(custody.model / "model.safetensors", tree / "b.safetensors")
    # A file that disappears between the listing and the hashing is an error, not the end.
    from weightvault.inventory import walk as walk_module

    listed = walk_module._walk

    def vanishing(roots: list[Path], errors: list[tuple[str, str]]) -> Iterator[object]:
        entries = list(listed(roots, errors))
        (tree / "a.safetensors").unlink()
        return iter(entries)

    monkeypatch.setattr(walk_module, "_walk", vanishing)
    report = take_inventory([tree], custody_references(custody.config))
    assert [(f.path.name, f.kind) for f in report.findings] == [
        ("a.safetensors", "unknown-weights"),
        ("b.safetensors", "exact-copy"),
    ]
    assert report.findings[0].sha256 is None
    assert [Path(p).name for p, _e in report.errors] == ["a.safetensors"]


def test_hostile_safetensors_headers_are_unknown_weights(custody: Custody, tmp_path: Path) -> None:
    """Headers that lie (tensors past the end, offsets that overlap the header, a shape that
    matches a registered tensor but data that does not) never crash the walk or match."""
    tree = tmp_path / "tree"
    tree.mkdir()
    shape = list(load_file(str(custody.model / "model.safetensors"))["embed.weight"].shape)
    nbytes = shape[0] * shape[1] * 4
    header = json.dumps(
        {"embed": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    prefix = len(header).to_bytes(8, "little") + header
    (tree / "past-end.safetensors").write_bytes(prefix + b"\0" * 100)
    (tree / "same-shape.safetensors").write_bytes(prefix + b"\0" * nbytes)
    report = take_inventory([tree], custody_references(custody.config))
    assert {f.path.name: f.kind for f in report.findings} == {
        "past-end.safetensors": "unknown-weights",
        "same-shape.safetensors": "unknown-weights",
    }


def test_signed_manifests_as_references(
    custody: Custody, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the data folder, a signed OMS manifest finds exact copies of the weight files and
    files encrypted with it as their manifest (the service's blobs are); it knows no tensors."""
    from weightvault.errors import VerificationError
    from weightvault.inventory import References, add_signed_manifest
    from weightvault.signing import KeyVerifier

    paths = _tree(custody, tmp_path / "tree")
    refs = References("", tensor_note="signed manifests list no tensor digests")
    label = add_signed_manifest(
        refs, custody.signature.read_bytes(), KeyVerifier.from_file(custody.root / "release.pub")
    )
    assert label.startswith("llama-v1@sha256:")
    report = take_inventory([tmp_path / "tree"], refs)
    kinds = {f.path: f.kind for f in report.findings}
    assert kinds[paths["exact"]] == kinds[paths["approved"]] == "exact-copy"
    assert kinds[paths["encrypted"]] == "encrypted-copy"
    assert kinds[paths["stolen-blob"]] == "encrypted-copy"  # the service records it too
    assert kinds[paths["resaved"]] == "unknown-weights"
    assert paths["config"] not in kinds  # not a weight file, and manifests record no sizes

    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pub").write_text(public_pem(other))
    with pytest.raises(VerificationError):
        add_signed_manifest(
            refs, custody.signature.read_bytes(), KeyVerifier.from_file(tmp_path / "other.pub")
        )
    base = ["inventory", str(tmp_path / "tree"), "--signature", str(custody.signature)]
    assert run([*base, "--signature-key", str(tmp_path / "other.pub")]) == 1
    assert "different key" in capsys.readouterr().err
    assert run([*base, "--signature-key", str(custody.root / "release.pub"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["references"]["source"] == "signed manifest of llama-v1"
    assert doc["stray_copies"] == 4
    assert run(base) == 2
