"""Self-speculation by early exit through a trained adapter (Kangaroo, Liu et al. 2024).

Drafting is layer skipping (jaxspec/drafters/layer_skip.py) with the skip set
"every layer from E on" and a trained adapter between the exit and the head
(models/early_exit.py): on the target's own cache and params, the shallow
layers write their K/V past the committed length, which the verify's full
forward overwrites. Drafting stops at a row's first draft whose top
probability is below `min_confidence` (Kangaroo's threshold, 0.6).

The adapter attends over its own one-layer cache, which must hold the
adapter's K/V of every committed token but the last emitted one (the target
cache's invariant). Each step feeds the last emitted token and the drafts
through shallow layers and adapter; the last draft d_n, which no later draft
follows, is fed once more with no head call, so that a row which accepts all
its drafts finds d_n's adapter K/V in place. After verification the adapter
cache's length is set to the target's: the K/V of accepted drafts were
computed from those very tokens at those positions, the rest lies past the
length and is overwritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec.context_vocab import ContextVocab
from jaxspec.drafters.base import Context, Draft, Verified
from jaxspec.drafters.layer_skip import LayerSkip

KANGAROO_MIN_CONFIDENCE = 0.6


@struct.dataclass
class EarlyExitState:
    n_valid: jax.Array  # [B] int32 drafts proposed in the last step
    length: jax.Array  # () int32 current draft length
    vocab: ContextVocab | None  # each row's draft vocabulary; None: the whole vocabulary
    adapter_cache: Any  # the adapter's K/V; its lengths are set to the target's at each propose


@dataclasses.dataclass(frozen=True)
class EarlyExit(LayerSkip):
    """`model` is a models.early_exit.ExitDraftModel; params {"target": ..., "adapter": ...}."""

    min_confidence: float = KANGAROO_MIN_CONFIDENCE

    def init(self, params, prompts, prompt_len, new_slots, start):
        base = super().init(params, prompts, prompt_len, new_slots, start)
        # The adapter's K/V over the prompt: h_E of every prompt token (the shallow layers run again over
        # the prompt once, on a scratch cache), through the adapter.
        b, p = start.tokens.shape
        positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
        target = self.model.target
        hidden = self.model.exit_hidden(params["target"], start.tokens, positions, target.init_cache(b, p)).hidden
        adapter = self.model.adapter
        cache = adapter.init_cache(b, start.cache.max_len)
        if start.constrain is not None:  # on a mesh, laid out as the target's cache is
            cache = start.constrain(cache)
        _, cache = adapter.apply(params["adapter"], hidden, positions, cache)
        return EarlyExitState(base.n_valid, base.length, base.vocab, cache.with_lengths(start.cache.lengths))

    def propose(self, params, state: EarlyExitState, ctx: Context):
        committed = ctx.target_cache.lengths
        caches = self.model.caches(ctx.target_cache, state.adapter_cache.with_lengths(committed))
        last = jnp.take_along_axis(ctx.history, (ctx.seq_len - 1)[:, None], axis=1)[:, 0]
        step = self._step(state.vocab)
        logits, caches = step(params, last, caches)
        tokens, probs, n_valid, caches = self._chain.draft(
            step, params, caches.commit(jnp.ones_like(committed)), logits, ctx, state.length
        )
        # caches.lengths is now committed + n_valid: the slot of the last draft, which is fed unscored.
        final = jnp.take_along_axis(tokens, jnp.maximum(n_valid - 1, 0)[:, None], axis=1)
        caches = self.model.forward(params, final, caches.lengths[:, None], caches, head=False).cache
        draft = Draft(tokens, n_valid, probs, cache=caches.target.with_lengths(committed))
        return draft, state.replace(n_valid=n_valid, adapter_cache=caches.adapter)

    def update(self, params, state: EarlyExitState, ctx: Context, verified: Verified):
        base = super().update(params, state, ctx, verified)
        return base.replace(adapter_cache=state.adapter_cache.with_lengths(ctx.seq_len - 1))
