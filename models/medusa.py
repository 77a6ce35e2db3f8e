"""Medusa draft heads (Cai et al. 2024): K small heads over the target's final hidden state.

The target's hidden state h at a token gives, through its own head, the next
token; head k (k = 0 .. K-1) maps the same h to a feature whose logits give
the token k + 1 places further. Each head is `num_layers` of Medusa's
ResBlock, x + SiLU(W x + b), with W zero-initialised so that a fresh head
starts as the identity (its first guess is the target's own next token).

The reference gives every head its own vocabulary-sized linear layer,
initialised from the target's head. Here the heads project through the
target's output embedding, read-only: a heads directory then holds K · D²
parameters instead of K · D · V (for Gemma 3 270M, 1.6M instead of 671M per
head), training touches only the ResBlocks, and nothing is copied. Drafts
are top-k choices, so a head's logits need not match the target's scale or
softcap. `draft_ids` optionally restricts drafting to a subset of the
vocabulary (the most frequent ids): scoring then reads N rows of the
embedding instead of V, and acceptance stays exact because a draft is only a
proposal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

MEDUSA = "medusa"


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
    """What a heads directory's config.json says (the target fields are checked at load)."""

    kind: str
    num_heads: int
    num_layers: int  # ResBlocks per head
    hidden_size: int  # the target's
    vocab_size: int  # the target's
    target_layers: int  # the target's layer count: heads read its last layer's output
    draft_vocab: int | None = None  # N when drafting from a subset of the vocabulary
    # accuracy[k][r]: how often head k's rank-r guess was the target's token, measured after training;
    # the static tree is grown from it (jaxspec/drafters/medusa.py).
    accuracy: tuple[tuple[float, ...], ...] = ()
    # Kangaroo's exit adapter (models/early_exit.py): the target layers it follows, its attention heads.
    exit_layer: int | None = None
    # The attention heads of an exit adapter, or of Hydra++'s prefix-attention layer (models/hydra.py:
    # None for Hydra heads without one).
    attention_heads: int | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["accuracy"] = [list(a) for a in self.accuracy]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "HeadsConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown heads config fields {sorted(unknown)}")
        d = dict(d)
        d["accuracy"] = tuple(tuple(float(x) for x in a) for a in d.get("accuracy", ()))
        return cls(**d)


class ResBlock(nn.Module):
    dtype: Any

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        w = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros, name="res_block")
        return x + nn.silu(w(x))


class MedusaModule(nn.Module):
    config: HeadsConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden):
        """hidden [..., D] -> features [..., K, D], one per head."""
        c = self.config
        out = []
        for k in range(c.num_heads):
            x = hidden.astype(self.dtype)
            for i in range(c.num_layers):
                x = ResBlock(self.dtype, name=f"head_{k}_{i}")(x)
            out.append(x)
        return jnp.stack(out, axis=-2)


@dataclasses.dataclass(frozen=True)
class MedusaHeads:
    """Medusa heads as the drafter and the trainer see them: static config + pure functions of params."""

    config: HeadsConfig
    dtype: str = "float32"

    @property
    def module(self) -> MedusaModule:
        return MedusaModule(self.config, jnp.dtype(self.dtype))

    def init_params(self, rng: jax.Array):
        return self.module.init(rng, jnp.zeros((1, self.config.hidden_size), jnp.float32))["params"]

    def features(self, params, hidden) -> jax.Array:
        """hidden [..., D] (the target's final, normed hidden state) -> [..., K, D]."""
        return self.module.apply({"params": params}, hidden)

    @staticmethod
    def logits(features, embedding) -> jax.Array:
        """features [..., K, D] against the target's output embedding (or its draft rows) [N, D] -> [..., K, N]."""
        return jnp.einsum("...kd,nd->...kn", features, embedding.astype(features.dtype)).astype(jnp.float32)

    def training_logits(self, params, hidden, tokens, table, rows) -> jax.Array:
        """Teacher-forced logits [B, T, K, N] over the target's hidden states [B, T, D]: head k at t guesses
        token t + k + 2 from h_t alone (the tokens and the embedding `table` are for heads that read them,
        models/hydra.py); scored against `rows` [N, D] (a draft vocabulary's rows)."""
        del tokens, table
        return self.logits(self.features(params, hidden), rows)

    @staticmethod
    def tensor_name(path: tuple[str, ...]) -> str:
        """`head_2_0/res_block/kernel` -> `head_2_0.res_block.kernel` (saved as is: no transposes)."""
        return ".".join(path)
