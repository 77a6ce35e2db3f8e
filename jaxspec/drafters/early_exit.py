"""Self-speculation by early exit through a trained adapter (Kangaroo, Liu et al. 2024).

Drafting is layer skipping (jaxspec/drafters/layer_skip.py) with the skip set
"every layer from E on" and a trained adapter between the exit and the head
(models/early_exit.py): on the target's own cache and params, the shallow
layers write their K/V past the committed length, which the verify's full
forward overwrites. Drafting stops at a row's first draft whose top
probability is below `min_confidence` (Kangaroo's threshold, 0.6).

The adapter attends over its own one-layer cache, which holds the adapter's
K/V of every committed token but the last emitted one (the target cache's
invariant). Its input there, h_E of the committed text, is what the target
computed on its way through its first E layers: the drafter taps the target
at layer E (`tap`, models/protocol.py), so the prefill hands it h_E of the
prompt and each verify h_E of the window it scored, and after each step the
adapter writes the K/V of the window's tokens from those, the kept ones
under the committed length, the rest past it to be overwritten. Drafting
then runs the shallow layers over drafts only, as Kangaroo does: never again
over the prompt, nor over a final draft fed for its K/V alone. A step that
drafts nothing (the loop's sizing let no row draft: `idle`) runs no shallow
layer at all and still keeps the adapter cache whole.
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

    @property
    def tap(self) -> int:
        """The layer whose hidden state (h_E) the target hands over: the exit's."""
        return self.model.adapter.config.exit_layer

    def init(self, params, prompts, prompt_len, new_slots, start):
        base = super().init(params, prompts, prompt_len, new_slots, start)
        # The adapter's K/V over the prompt, from h_E of every prompt token (start.tapped).
        b, p = start.tokens.shape
        positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
        adapter = self.model.adapter
        cache = adapter.init_cache(b, start.cache.max_len)
        if start.constrain is not None:  # on a mesh, laid out as the target's cache is
            cache = start.constrain(cache)
        _, cache = adapter.apply(params["adapter"], start.tapped, positions, cache)
        return EarlyExitState(base.n_valid, base.length, base.vocab, cache.with_lengths(start.cache.lengths))

    def propose(self, params, state: EarlyExitState, ctx: Context):
        committed = ctx.target_cache.lengths  # the adapter cache's lengths too
        caches = self.model.caches(ctx.target_cache, state.adapter_cache)
        last = jnp.take_along_axis(ctx.history, (ctx.seq_len - 1)[:, None], axis=1)[:, 0]
        step = self._step(state.vocab)
        logits, caches = step(params, last, caches)
        tokens, probs, n_valid, caches = self._chain.draft(
            step, params, caches.commit(jnp.ones_like(committed)), logits, ctx, state.length
        )
        # Both caches go back to the committed lengths: what the drafts wrote past them is overwritten.
        draft = Draft(tokens, n_valid, probs, cache=caches.target.with_lengths(committed))
        return draft, state.replace(n_valid=n_valid, adapter_cache=caches.adapter.with_lengths(committed))

    def update(self, params, state: EarlyExitState, ctx: Context, verified: Verified):
        base = super().update(params, state, ctx, verified)
        # The window's h_E along the kept path, at the positions the verify gave it (cache lengths on).
        cache = state.adapter_cache
        hidden = jnp.take_along_axis(verified.tapped, verified.path[..., None], axis=1)
        positions = cache.lengths[:, None] + jnp.arange(hidden.shape[1])[None, :]
        _, cache = self.model.adapter.apply(params["adapter"], hidden, positions, cache)
        return base.replace(adapter_cache=cache.with_lengths(ctx.seq_len - 1))
