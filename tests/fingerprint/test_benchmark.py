"""``benchmarks/fingerprints.py`` runs end to end on a tiny bios encoder, and its batched parts
do what the single-copy parts do: the table is only as good as the code that fills it."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from tests.tamper.test_tamper_bios import TINY

from weightvault.tamper import bios

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The benchmark script as a module, with the tiny bios size registered."""
    spec = importlib.util.spec_from_file_location(
        "fingerprint_bench", ROOT / "benchmarks" / "fingerprints.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    bios.SIZES["bios-tiny"] = TINY
    yield module
    del bios.SIZES["bios-tiny"], sys.modules[spec.name]
    for cached in (bios._world, bios._pretrained_state, bios._release_state):
        cached.cache_clear()


def test_small_run_fills_every_row_with_real_innocent_copies(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--outsiders 5``: every row traces the leaker and 6 innocent copies (the unmarked
    original, 3 copies for recipients off the list, 2 on it) against all 50 keys; the leaker
    and the on-list copies' own recipients are named, nobody else is."""
    monkeypatch.setattr(bench, "EXACT_ABOVE", 1.0)  # recompute many scores the trace way
    bench.main(["--size", "bios-tiny", "--recipients", "50", "--outsiders", "5", "--pairs", "2",
                "--stream-gb", "0", "--no-limits", "--batch", "4"])  # fmt: skip
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "(" in line]
    assert len(rows) == 10
    for line in rows:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        label, rank, named, copies, pairs, false, on_list = (
            cells[0], cells[1], cells[4], cells[6], cells[7], cells[8], cells[10]
        )  # fmt: skip
        assert rank == "1" and "leaker" in named, line
        assert copies == "6" and false == "0", line
        collusion = label.startswith("collusion")
        # 6 copies x 50 keys, less the on-list copies' own keys, plus the leaker's copy against
        # the 49 others (the colluder is not among 50 recipients)
        assert int(pairs) == 6 * 50 - (4 if collusion else 2) + 49, line
        assert on_list == ("4/4" if collusion else "2/2"), line
        recomputed = re.search(r"(\d+) scores recomputed exactly, screen error ([0-9.e+-]+)", line)
        assert recomputed is not None and int(recomputed.group(1)) > 0, line
        assert float(recomputed.group(2)) < 1e-4, line
    assert "collusion rate: 2 pairs" in out and "both named 2/2" in out


def test_batched_fine_tune_is_the_single_copy_recipe(bench: ModuleType) -> None:
    """Three copies fine-tuned together (stacked parameters, ``vmap``) end where each copy
    fine-tuned alone ends, to float rounding; a different seed gives a different copy."""
    bed = bios.BiosTestbed("bios-tiny")
    original = {k: v.detach().clone() for k, v in bed.release(0).state_dict().items()}
    noisy = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in original.items()}  # fmt: skip
    together = bench._fine_tune_many(bed, [original, noisy, original], [3, 4, 5])
    alone = [bench._fine_tune(bed, s, seed=seed)
             for s, seed in ((original, 3), (noisy, 4), (original, 5))]  # fmt: skip
    for batched, single in zip(together, alone, strict=True):
        for name, tensor in single.items():
            assert torch.allclose(batched[name], tensor, atol=1e-5, rtol=1e-4), name
    moved = [float((together[0][k] - original[k]).abs().max()) for k in original]
    assert max(moved) > 1e-4  # it did train
    differs = [float((together[0][k] - together[2][k]).abs().max()) for k in original]
    assert max(differs) > 1e-6  # own head, own result


def test_rows_split_into_parts_count_the_same_copies(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--rows 3,10 --parts 3`` (int8 and collusion, each row's 7 innocent copies in three
    ranges) prints exactly the numbers of one unsplit run of those rows: the same copies, the
    same seeds, the counts summed and the largest z kept."""
    common = ["--size", "bios-tiny", "--recipients", "50", "--outsiders", "6", "--pairs", "1",
              "--stream-gb", "0", "--no-limits", "--no-task-metrics", "--batch", "2",
              "--rows", "3,10"]  # fmt: skip

    def table(extra: list[str]) -> list[str]:
        bench.main([*common, *extra])
        lines = [line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("| ") and "(" in line]  # fmt: skip
        return [line.split("|  (")[0] for line in lines]  # without the seconds

    whole, split = table([]), table(["--parts", "3"])
    assert len(whole) == 2 and whole[0].startswith("| int8") and "collusion" in whole[1]
    assert split == whole
    assert all(line.split("|")[7].strip() == "7" for line in whole)  # innocent copies
    with pytest.raises(SystemExit):
        bench.main([*common[:-1], "11"])
