"""Modules the torch flavor tests save: importable by name, as a saved class must be."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden = hidden
        self.out_features = out_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Opaque(nn.Module):
    """Keeps its constructor argument under another name: init_args cannot be recovered."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class TwoInputs(nn.Module):
    def __init__(self, a_features: int = 3, b_features: int = 2) -> None:
        super().__init__()
        self.a = nn.Linear(a_features, 4)
        self.b = nn.Linear(b_features, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(a) + self.b(b), (self.a(a) * self.b(b)).sum(dim=1)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        logits = self.layer(x)
        return {"logits": logits, "probabilities": logits.softmax(dim=1)}


class TiedLM(nn.Module):
    """An embedding whose weight the output projection shares (weight tying)."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.vocab = vocab
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


class WithBuffers(nn.Module):
    """A persistent and a non-persistent buffer, the latter changed after __init__."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.features = features
        self.layer = nn.Linear(features, features)
        self.register_buffer("offset", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * self.scale + self.offset


class MetaHostile(nn.Module):
    """An __init__ that reads a tensor's value, which the meta device cannot do."""

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.features = features
        self.layer = nn.Linear(features, 1)
        self.threshold = float(torch.tensor(0.5).item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) - self.threshold


class PlainTensorAttribute(nn.Module):
    """A tensor kept as a plain attribute: in no state_dict, so __init__ must really run."""

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.features = features
        self.layer = nn.Linear(features, 1)
        self.shift = torch.full((1,), 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.shift
