"""Files the documents' examples assume exist, made by ``<!-- docs-test: setup NAME ... -->``.

Each fixture writes into the session's current folder, deterministically (fixed seeds, fixed
bytes) so that the digests the documents show stay true; only keys are fresh, and their ids are
normalised (``tests/docs/shell.py``). Real libraries make real files: safetensors and PyTorch
checkpoints, pickles with a payload (never loaded here), EC keys from ``cryptography``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.docs.shell import ShellSession


def _tensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file(
        {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()},
        str(path),
    )


def ec_key(folder: Path) -> None:
    """``key.pem`` (EC P-256 private key, PKCS#8, mode 0600) and ``key.pub``."""
    from tests.keyfiles import write_ec_key_pair

    private, _ = write_ec_key_pair(folder, "key")
    os.chmod(private, 0o600)


def llama_tiny(folder: Path) -> None:
    """``llama-tiny/``: a sharded model as hubs ship it (config, two shards, tokenizer)."""
    model = folder / "llama-tiny"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_layers": 2})
        + "\n"
    )
    _tensors(model / "model-00001-of-00002.safetensors", {"embed.weight": (256, 64)}, 1)
    _tensors(model / "model-00002-of-00002.safetensors", {"lm_head.weight": (256, 64)}, 2)
    (model / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(256)}}}) + "\n"
    )


def llama_small(folder: Path) -> None:
    """``llama-tiny/`` with one weight file (8 MiB) and a config: the encryption examples."""
    model = folder / "llama-tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 4096, "vocab_size": 256}) + "\n")
    _tensors(
        model / "model.safetensors",
        {"embed.weight": (256, 4096), "lm_head.weight": (256, 4096)},
        3,
    )


def llama(folder: Path) -> None:
    """``llama/``: a config and a 1 MiB safetensors file (the custody examples)."""
    model = folder / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "vocab_size": 4096}) + "\n")
    _tensors(model / "model.safetensors", {"embed.weight": (4096, 64)}, 4)


def tiny_model(folder: Path) -> None:
    """``tiny-model/``: ``config.json`` and a 1 MiB ``weights.bin`` (fixed bytes)."""
    import hashlib

    model = folder / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 16}) + "\n")
    block = hashlib.sha256(b"weightvault docs").digest()
    (model / "weights.bin").write_bytes(block * ((1 << 20) // len(block)))


def pki(folder: Path) -> None:
    """A code-signing PKI: ``roots.pem`` -> ``intermediate.pem`` -> ``leaf.pem`` (key in
    ``leaf-key.pem``, e-mail SAN ``release@example.com``)."""
    from tests.signing._pki import make_ca, make_leaf, write_certs, write_private

    root_key, root = make_ca("example root")
    middle_key, middle = make_ca("example intermediate", root_key, root)
    leaf_key, leaf = make_leaf(middle_key, middle, email="release@example.com")
    write_certs(folder / "roots.pem", root)
    write_certs(folder / "intermediate.pem", middle)
    write_certs(folder / "leaf.pem", leaf)
    write_private(folder / "leaf-key.pem", leaf_key)


def shared_fixtures(folder: Path) -> str | None:
    """``../shared`` beside the session folder, as beside a checkout: the project's shared test
    fixtures (``model-signing``'s historical signatures), when this checkout has them."""
    from tests.paths import MODEL_SIGNING_HISTORY, SHARED_FIXTURES

    if not MODEL_SIGNING_HISTORY.is_dir():
        return f"needs the shared fixtures at {MODEL_SIGNING_HISTORY}"
    (folder.parent / "shared").symlink_to(SHARED_FIXTURES.parent, target_is_directory=True)
    return None


class _Payload:
    """Pickles as a call of ``os.system`` (written, never loaded)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo owned",))


def scan_model(folder: Path) -> None:
    """``model/``: a clean PyTorch checkpoint and config, a pickle importing an unknown class,
    and a PyTorch checkpoint whose pickle calls ``os.system``."""
    import torch

    model = folder / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 2}) + "\n")
    torch.save({"weight": torch.arange(4, dtype=torch.float32)}, model / "pytorch_model.bin")
    # GLOBAL 'mypkg.layers Block', EMPTY_TUPLE, NEWOBJ, STOP: a full-model pickle's shape.
    (model / "extra.pkl").write_bytes(b"\x80\x02cmypkg.layers\nBlock\n)\x81.")
    torch.save({"state": {}, "hook": _Payload()}, model / "optimizer.pt")


def payload(folder: Path) -> None:
    """``llama/extra.bin``: a pickle that calls ``os.system`` when loaded (never loaded here)."""
    (folder / "llama").mkdir(exist_ok=True)
    (folder / "llama" / "extra.bin").write_bytes(pickle.dumps(_Payload(), protocol=2))


def broken_safetensors(folder: Path) -> None:
    """``model/broken.safetensors``: a header length that points past the end of the file."""
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "broken.safetensors").write_bytes((16).to_bytes(8, "little") + b"{}")


FIXTURES: dict[str, Callable[[Path], str | None]] = {
    "ec-key": ec_key,
    "llama-tiny": llama_tiny,
    "llama-tiny-one-file": llama_small,
    "llama": llama,
    "tiny-model": tiny_model,
    "pki": pki,
    "shared-fixtures": shared_fixtures,
    "scan-model": scan_model,
    "payload": payload,
    "broken-safetensors": broken_safetensors,
}


def prepare(names: Iterable[str], session: ShellSession) -> str | None:
    """Run the named fixtures in the session's current folder. Returns why the next block
    cannot run here, when a fixture says so (then the block is skipped with that reason)."""
    status, output = session.run("pwd")
    if status != 0:
        raise RuntimeError(f"pwd failed in the document's shell: {output}")
    folder = Path(output.strip())
    for name in names:
        reason = FIXTURES[name](folder)
        if reason:
            return reason
    return None
