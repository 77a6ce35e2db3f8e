"""Medusa (Cai et al. 2024): draft heads over the target's own hidden state, verified as a static tree.

After each verify the drafter keeps the target's final hidden state at the
end of the accepted path: the state whose logits gave the token just
emitted. Head k maps it to a guess for the token k + 1 places after that
one. Every depth-d node of the static tree (jaxspec/static_tree.py) takes its
rank of head d-1's top guesses, so one top-k per head fills the whole tree.
Drafts are point masses (lossless under sampling by the point-mass tree rule).

The first step reads the hidden state before the prompt's last token from
the target's prefill (`Start.hidden`); only a one-token prompt, and an
encoder-decoder's decoder, which prefills nothing, begin with a plain step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import vocab_reduce
from jaxspec.drafters.base import Context, Verified, static_tree_draft
from jaxspec.static_tree import StaticTree


@struct.dataclass
class MedusaState:
    hidden: jax.Array  # [B, D] the target's hidden state before the last emitted token
    ready: jax.Array  # [B] bool: hidden holds a verified state


@dataclasses.dataclass(frozen=True)
class Medusa:
    heads: object  # models.medusa.MedusaHeads
    tree: StaticTree

    @property
    def num_draft_tokens(self) -> int:
        return self.tree.size

    def init(self, params, prompts, prompt_len, new_slots, start):
        """From the target's prefill: the hidden state before each row's last prompt token."""
        b = prompts.shape[0]
        if start.hidden is None:
            return MedusaState(jnp.zeros((b, self.heads.config.hidden_size), jnp.float32), jnp.zeros((b,), bool))
        before_last = jnp.maximum(start.lengths - 2, 0)
        hidden = jnp.take_along_axis(start.hidden, before_last[:, None, None], axis=1)[:, 0]
        return MedusaState(hidden.astype(jnp.float32), start.lengths >= 2)

    def propose(self, params, state: MedusaState, ctx: Context):
        """params: (heads params, the target's output embedding rows [N, D], their ids [N] or None)."""
        head_params, embedding, ids = params
        b, t = state.hidden.shape[0], self.tree.size
        logits = self.heads.logits(self.heads.features(head_params, state.hidden), embedding)  # [B, K, N]
        _, top = vocab_reduce.top_k(logits, self.tree.max_rank)  # [B, K, R]
        head = jnp.asarray(self.tree.depth) - 1
        tokens = top[:, head, jnp.asarray(self.tree.rank)]
        if ids is not None:
            tokens = ids[tokens]
        ready = state.ready & ~ctx.done
        return static_tree_draft(self.tree.parents, tokens.astype(jnp.int32), jnp.broadcast_to(ready[:, None], (b, t))), state

    def update(self, params, state: MedusaState, ctx: Context, verified: Verified):
        end = jnp.take_along_axis(verified.path, verified.n_accepted[:, None], axis=1)  # [B, 1]
        hidden = jnp.take_along_axis(verified.hidden, end[:, :, None], axis=1)[:, 0]
        return MedusaState(hidden.astype(jnp.float32), jnp.ones_like(state.ready))
