"""Small real models for the fingerprint tests: transformers BERT and GPT-2 built from configs
(no download), the tamper lab's testbed trunks, and a ReLU MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from weightvault.fingerprint.keys import FingerprintKey

KEY = FingerprintKey(bytes(range(32)))
OTHER_KEY = FingerprintKey(bytes(range(1, 33)))
HEADS = 4


def tiny_bert(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=256,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.1,  # peaked attention: mixing heads up would show in the outputs
    )
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=300, n_embd=64, n_layer=2, n_head=HEADS, n_positions=32,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        initializer_range=0.1,
    )  # fmt: skip
    return GPT2Model(config).eval()


def relu_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4)
    )


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: Any = model(input_ids=ids)
        return out.last_hidden_state  # type: ignore[no-any-return]


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(seed))
