"""Model I/O (safetensors) and the bring-your-own-model adapter interface."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from weightvault.errors import FormatError, InputError, UsageError
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.testbed import (
    TamperModel,
    load_adapter,
    load_model,
    read_metadata,
    save_model,
)
from weightvault.tamper.testbed import (
    Testbed as AdapterProtocol,
)


def test_save_load_round_trip(tmp_path: Path, digits: DigitsTestbed) -> None:
    model = digits.release(0)
    path = tmp_path / "m.safetensors"
    save_model(path, model, {"testbed": "digits", "defense": None})
    loaded, meta = load_model(path, digits)
    assert meta == {"testbed": "digits", "defense": None}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(InputError, match="already exists"):
        save_model(path, model, {"testbed": "digits"})


def test_load_refuses_bad_files(tmp_path: Path, digits: DigitsTestbed) -> None:
    model = digits.release(0)
    good = tmp_path / "good.safetensors"
    save_model(good, model, {"testbed": "digits"})
    data = good.read_bytes()
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="not a safetensors file"):
        load_model(truncated, digits)
    other = tmp_path / "other.safetensors"
    save_model(other, model, {"testbed": "minilm"})
    with pytest.raises(InputError, match="saved for testbed 'minilm'"):
        load_model(other, digits)
    wrong = tmp_path / "wrong.safetensors"
    bigger = TamperModel(torch.nn.Sequential(torch.nn.Linear(64, 16)), 16, 2)
    save_model(wrong, bigger, {"testbed": "digits"})
    with pytest.raises(FormatError, match="tensor"):
        load_model(wrong, digits)
    with pytest.raises(InputError, match="no such model file"):
        read_metadata(tmp_path / "missing.safetensors")


ADAPTER = '''
import torch
from torch import nn
from weightvault.tamper.testbed import Split, TamperData, TamperModel

class Tiny:
    """A user's own model family: 8 inputs, features of size 4, two tasks."""
    name = "tiny"
    feature_dim = 4

    def make_trunk(self, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 4), nn.Tanh())

    def release(self, seed=0):
        torch.manual_seed(seed)
        return TamperModel(self.make_trunk(seed), 4, 2)

    def data(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(300, 8, generator=g)
        d, h = (x[:, 0] > 0).long(), (x[:, 1] > 0).long()
        parts = [slice(0, 100), slice(100, 200), slice(200, 300)]
        s = [Split(x[p], d[p], h[p]) for p in parts]
        return TamperData(s[0], s[1], s[2], num_desired=2, num_harmful=2)

    def extra_references(self):
        return {}

def make():
    return Tiny()

def broken():
    return object()
'''


def test_bring_your_own_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_adapter.py").write_text(textwrap.dedent(ADAPTER))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        bed = load_adapter("my_adapter:make")
        assert isinstance(bed, AdapterProtocol)
        assert bed.name == "tiny"
        with pytest.raises(InputError, match="does not implement the Testbed interface"):
            load_adapter("my_adapter:broken")
        with pytest.raises(InputError, match="cannot import"):
            load_adapter("my_adapter:nope")
    finally:
        sys.modules.pop("my_adapter", None)
    with pytest.raises(UsageError, match="module:callable"):
        load_adapter("not-a-reference")
