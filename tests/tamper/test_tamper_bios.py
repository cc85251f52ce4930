"""The ``bios`` testbed: generated text, a real ``transformers`` BERT, disjoint name pools.

The documented run (pretraining, defenses, the grid) takes tens of minutes; these tests check the
parts that make it meaningful, and run the whole path once on a tiny encoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from weightvault.tamper import bios
from weightvault.tamper.attacks import run_attack
from weightvault.tamper.defenses import MLACConfig, TARConfig, train_defense
from weightvault.tamper.minilm import PROFESSIONS, _names
from weightvault.tamper.spec import AttackSpec, ProbeSpec

pytest.importorskip("transformers")

PRONOUN = re.compile(r"\b(he|she|him|her|his|hers)\b")
TINY = bios.BiosSize(
    hidden=32,
    layers=2,
    heads=2,
    sizes=(120, 80, 60),
    sentences_per_name=1,
    pretrain_steps=3,
    pretrain_batch=16,
    release_steps=3,
)


@pytest.fixture
def tiny_bios(monkeypatch: pytest.MonkeyPatch) -> Iterator[bios.BiosTestbed]:
    monkeypatch.setitem(bios.SIZES, "bios-tiny", TINY)
    yield bios.BiosTestbed("bios-tiny")
    for cached in (bios._world, bios._pretrained_state, bios._release_state):
        cached.cache_clear()


def test_pretraining_text_ties_every_name_to_its_pronouns() -> None:
    names = _names(min_us_frequency=1)
    text = bios.pretraining_text(names, per_name=2)
    assert len(text) == 2 * (len(names["M"]) + len(names["F"]))
    assert text == bios.pretraining_text(names, per_name=2)  # deterministic
    male = {n.lower() for n in names["M"]}
    female = {n.lower() for n in names["F"]}
    for sentence in text[:300]:
        words = bios.tokenize(sentence)
        pronouns = {w for w in words if PRONOUN.fullmatch(w)}
        assert pronouns, sentence
        if {"he", "his", "him"} & pronouns:
            assert any(w in male for w in words), sentence
        else:
            assert any(w in female for w in words), sentence


def test_bios_are_pronoun_free_and_name_pools_disjoint(tiny_bios: bios.BiosTestbed) -> None:
    world = bios._world("bios-tiny")
    data = tiny_bios.data()
    assert [len(s) for s in (data.defender, data.attacker, data.test)] == list(TINY.sizes)
    assert data.num_desired == len(PROFESSIONS) and data.num_harmful == 2
    vocab = world.vocab
    first_names = []
    for split in (data.defender, data.attacker, data.test):
        names = set()
        for row in split.x:
            words = [vocab.words[i] for i in row.tolist() if i != 0]
            assert words[0] == bios.CLS
            assert not any(PRONOUN.fullmatch(w) for w in words)
            assert bios.UNK not in words
            names.add(words[1])
        first_names.append(names)
    assert not first_names[0] & first_names[1]
    assert not first_names[1] & first_names[2]
    assert not first_names[0] & first_names[2]
    assert abs(int(data.test.harmful.sum()) - len(data.test) // 2) <= 1  # gender balanced


def test_trunk_is_a_transformers_bert_and_padding_does_not_matter(
    tiny_bios: bios.BiosTestbed,
) -> None:
    from transformers import BertModel

    trunk = tiny_bios.make_trunk(0)
    assert isinstance(trunk, bios.BertTrunk) and isinstance(trunk.bert, BertModel)
    x = tiny_bios.data().test.x[:8]
    padded = torch.cat([x, torch.zeros(8, 4, dtype=x.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(trunk(x), trunk(padded[:, : x.shape[1]]), atol=1e-6)
        trimmed = trunk.bert(input_ids=x, attention_mask=(x != 0).long()).last_hidden_state
    assert trimmed.shape[-1] == TINY.hidden
    assert trunk.top_layer_prefix == "bert.encoder.layer.1"


def test_the_whole_path_runs_on_a_tiny_encoder(tiny_bios: bios.BiosTestbed) -> None:
    """Pretraining, the release, both defenses (MLAC second order through the transformer) and
    every attack mode, deterministic."""
    data = tiny_bios.data()
    release = tiny_bios.release(0)
    assert torch.equal(
        release.state_dict()["trunk.bert.embeddings.word_embeddings.weight"],
        tiny_bios.release(0).state_dict()["trunk.bert.embeddings.word_embeddings.weight"],
    )
    mlac, record = train_defense(
        release,
        data,
        MLACConfig(outer_steps=1, inner_steps=2, inner_batch_sizes=(4,), eval_batch=8),
    )
    assert record.history["harmful_calibrated"]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(mlac.state_dict().values(), release.state_dict().values(), strict=True)
    )
    train_defense(release, data, TARConfig(outer_steps=1, inner_steps=2, tr_every=1, batch_size=8))
    for mode in ("full", "lora", "top", "reinit-top", "head"):
        spec = AttackSpec(mode, 20, mode=mode, lr=1e-3, steps=2, batch_size=8)  # type: ignore[arg-type]
        first = run_attack(release, "u", spec, data, seed=0, points=2)
        again = run_attack(release, "u", spec, data, seed=0, points=2)
        assert first.to_dict() == again.to_dict()
    probe = run_attack(release, "u", ProbeSpec("p", 20), data, seed=0)
    assert 0.0 <= probe.best_acc <= 1.0


def test_parameter_counts() -> None:
    counts = bios.parameter_count("bios")
    assert counts["total"] == counts["embeddings"] + counts["layers"]
    assert 10_000_000 <= counts["total"] <= 30_000_000  # the "not a toy" range
    assert counts["layers"] > 2_000_000
    assert bios.parameter_count("bios-base")["total"] > 10_000_000


def test_every_vocabulary_word_is_used_by_the_text() -> None:
    """The embedding table's size is the text's: no row exists for a word the lab never
    trains on, and the other first names that fill it never appear in a bio."""
    world = bios._world("bios")
    used = {w for t in world.pretraining for w in bios.tokenize(t)}
    assert set(world.vocab.words) - set(bios.SPECIALS) == used | {
        w
        for split in (world.data.defender, world.data.attacker, world.data.test)
        for row in split.x.tolist()
        for w in (world.vocab.words[i] for i in row)
    } - set(bios.SPECIALS)
    assert len(world.vocab) > 30_000
    common = _names(min_us_frequency=1)
    others = bios.other_first_names(common)
    assert not set(others["M"]) & set(others["F"])
    assert not (set(others["M"]) | set(others["F"])) & {
        n.lower() for group in common.values() for n in group
    }
    in_bios = {
        world.vocab.words[int(row[1])]
        for split in (world.data.defender, world.data.attacker, world.data.test)
        for row in split.x
    }
    assert in_bios <= {n.lower() for group in common.values() for n in group}


def test_trained_states_are_cached_between_runs(
    tiny_bios: bios.BiosTestbed, tmp_path: Path
) -> None:
    bios.set_cache_dir(tmp_path)
    try:
        first = tiny_bios.release(0).state_dict()
        written = sorted(p.name.split("-")[1] for p in tmp_path.iterdir())
        assert written == ["base", "release"]
        bios._pretrained_state.cache_clear()
        bios._release_state.cache_clear()
        again = tiny_bios.release(0).state_dict()
        assert all(torch.equal(first[k], again[k]) for k in first)
        # a damaged entry is retrained, not trusted
        for path in tmp_path.iterdir():
            path.write_bytes(b"junk")
        bios._pretrained_state.cache_clear()
        bios._release_state.cache_clear()
        third = tiny_bios.release(0).state_dict()
        assert all(torch.equal(first[k], third[k]) for k in first)
    finally:
        bios.set_cache_dir(None)
