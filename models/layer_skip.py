"""Running a decoder with some of its sub-layers left out (self-speculation).

A `SkipSet` names attention and MLP sub-layers by layer index. A skipped
sub-layer adds nothing to the residual stream, so the layer's output is its
input plus whatever sub-layer still runs; a skipped attention also writes no
K/V. Early exit after E layers is the set that skips every sub-layer of the
layers E .. L-1: the shared final norm and head then read layer E's output.
The set is static (hashable, one per batch: a per-row set would compile to a
select that runs both branches); a search over many sets instead passes
`gates` [2, L] to the forward, 1 where a sub-layer runs and 0 where it is
skipped, so that one compiled program scores every candidate.

Text form, for the CLI and saved files: "a3,a5,m4" skips the attention of
layers 3 and 5 and the MLP of layer 4; "exit:6" exits after six layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class SkipSetError(ValueError):
    """A skip set that is malformed or names layers the model does not have."""


@dataclasses.dataclass(frozen=True)
class SkipSet:
    attention: tuple[int, ...] = ()  # layers whose attention sub-layer is skipped, sorted
    mlp: tuple[int, ...] = ()  # layers whose MLP sub-layer is skipped, sorted

    def __post_init__(self):
        object.__setattr__(self, "attention", tuple(sorted(set(self.attention))))
        object.__setattr__(self, "mlp", tuple(sorted(set(self.mlp))))

    @classmethod
    def exit_after(cls, exit_layer: int, num_layers: int) -> "SkipSet":
        """Every sub-layer from layer `exit_layer` on: the first `exit_layer` layers run."""
        if not 1 <= exit_layer < num_layers:
            raise SkipSetError(f"exit layer must be in [1, {num_layers}) for a {num_layers}-layer model, got {exit_layer}")
        rest = tuple(range(exit_layer, num_layers))
        return cls(rest, rest)

    @classmethod
    def parse(cls, text: str, num_layers: int) -> "SkipSet":
        """The set `text` names ("a3,m3,a5" or "exit:E"), checked against a model of `num_layers` layers."""
        text = text.strip()
        if text.startswith("exit:"):
            index = text[len("exit:"):]
            if not index.isdigit():
                raise SkipSetError(f"bad exit layer {index!r}: write exit:<layer count>, e.g. exit:6")
            return cls.exit_after(int(index), num_layers)
        attention, mlp = [], []
        for item in filter(None, (s.strip() for s in text.split(","))):
            kind, index = item[:1], item[1:]
            if kind not in ("a", "m") or not index.isdigit():
                raise SkipSetError(
                    f"bad skip set item {item!r}: write a<layer> for an attention sub-layer, m<layer> for an MLP "
                    "(e.g. a3,m3,a5), or exit:<layers>"
                )
            (attention if kind == "a" else mlp).append(int(index))
        return cls(tuple(attention), tuple(mlp)).check(num_layers)

    def __str__(self) -> str:
        return ",".join([f"a{i}" for i in self.attention] + [f"m{i}" for i in self.mlp])

    def __len__(self) -> int:
        return len(self.attention) + len(self.mlp)

    def check(self, num_layers: int) -> "SkipSet":
        bad = sorted(i for i in self.attention + self.mlp if not 0 <= i < num_layers)
        if bad:
            raise SkipSetError(f"the skip set names layers {bad}, but the model has layers 0..{num_layers - 1}")
        if len(self.attention) == num_layers and len(self.mlp) == num_layers:
            raise SkipSetError("the skip set skips every sub-layer: nothing would be computed")
        return self

    def runs(self, layer: int) -> tuple[bool, bool]:
        """(attention runs, MLP runs) at this layer."""
        return layer not in self.attention, layer not in self.mlp

    def gates(self, num_layers: int):
        """[2, L] float32: 1 where a sub-layer runs, 0 where it is skipped (the search's dynamic form)."""
        import numpy as np

        g = np.ones((2, num_layers), np.float32)
        g[0, list(self.attention)] = 0.0
        g[1, list(self.mlp)] = 0.0
        return g


@dataclasses.dataclass(frozen=True)
class SkippedModel:
    """A decoder-only model seen through a skip set: its forward, on the model's own params and cache
    layout. Nothing is copied; `params` are the target's."""

    model: Any  # a CausalLM
    skip: SkipSet

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def forward(self, params, tokens, positions, cache, window_mask=None, vocab=None):
        """vocab [B, N]: logits over those ids only (CausalLM.forward)."""
        return self.model.forward(params, tokens, positions, cache, window_mask, skip=self.skip, vocab=vocab)
