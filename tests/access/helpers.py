"""Real, tiny transformers models for the structured-access tests (no hub downloads), and the
stored ciphertext a worker is given.

``make_tiny_lm`` builds a GPT-2 with a 64-token vocabulary, trains it for a few steps on a
repeating sequence (so its answers are not noise), and saves ``config.json`` +
``model.safetensors``; ``MARKER`` is planted in its weights, so a scan of the disk can look for
plaintext by that byte string.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from weightvault.crypt import FileContext, encrypt_file
from weightvault.crypt.envelope import unlock
from weightvault.crypt.recipients import X25519Identity

MARKER = b"WVPLAINTEXTMARKER-7f3a9c"
"""Twenty-four bytes planted in the first tensor of every test model."""

REPEAT = [5, 9, 13, 17, 21, 25, 29, 33]


def _plant_marker(tensor: Any) -> None:
    import torch

    raw = torch.frombuffer(bytearray(MARKER + bytes(-len(MARKER) % 4)), dtype=torch.float32)
    tensor.view(-1)[-raw.numel() :] = raw  # the last positions: never used by the tests


def make_tiny_lm(folder: Path, *, seed: int = 0, steps: int = 30, layers: int = 2) -> Path:
    """A 2-layer GPT-2 (embedding 32, vocabulary 64), briefly trained to continue REPEAT."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=64, n_positions=128, n_embd=32, n_layer=layers, n_head=2, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([REPEAT * 4])
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    with torch.no_grad():
        _plant_marker(model.transformer.wpe.weight)
    model.save_pretrained(folder, safe_serialization=True)
    for extra in folder.iterdir():
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()
    return folder


def make_tiny_classifier(folder: Path, *, seed: int = 1) -> Path:
    """A 1-layer GPT-2 sequence classifier with 3 labels (untrained)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=3,
        pad_token_id=0,
    )  # fmt: skip
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        _plant_marker(model.transformer.wpe.weight)
    model.save_pretrained(folder, safe_serialization=True)
    for extra in folder.iterdir():
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()
    return folder


def encrypt_model(folder: Path, out: Path) -> list[dict[str, str]]:
    """Encrypt each file of ``folder`` to a throwaway X25519 key into ``out``; the worker
    message's ``files`` entries (ciphertext path and data key)."""
    out.mkdir(parents=True, exist_ok=True)
    identity = X25519Identity.generate()
    names = sorted(p.name for p in folder.iterdir())
    entries = []
    for index, name in enumerate(names):
        context = FileContext(
            model=folder.name, path=name, file_index=index, file_count=len(names),
            set_id="0" * 32, manifest_digest="sha256:" + "0" * 64,
        )  # fmt: skip
        target = out / f"{index}.wvenc"
        encrypt_file(folder / name, target, context, [identity.recipient()])
        dek = unlock(target, [identity]).dek
        entries.append(
            {"path": name, "blob": str(target), "dek": base64.b64encode(dek).decode("ascii")}
        )
    return entries


def lm_dataset(rows: int = 4) -> str:
    return "\n".join(json.dumps({"input_ids": REPEAT * 2}) for _ in range(rows)) + "\n"


def scan_for_marker(*roots: Path) -> list[Path]:
    """Every file under ``roots`` whose bytes contain :data:`MARKER`."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and MARKER in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def scan_recent_for_marker(root: Path, since: float, *, max_bytes: int = 64 << 20) -> list[Path]:
    """Files under ``root`` changed after ``since`` (epoch seconds) holding :data:`MARKER`: the
    shared temporary folder, where a leak of plaintext would most likely land."""
    found = []
    for folder, _dirs, names in os.walk(root, onerror=lambda _error: None):
        for name in names:
            path = Path(folder) / name
            try:
                info = path.lstat()
                if not path.is_file() or info.st_mtime < since or info.st_size > max_bytes:
                    continue
                if MARKER in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found
