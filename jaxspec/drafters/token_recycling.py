"""Token recycling (Luo et al. 2024): the target's own top-k successors, recycled as a static draft tree.

Every verify scores each window token and yields its top-k next tokens; the
drafter keeps them in a successor table [V, k] (`table[x]`: the top-k after x,
as last seen) and drafts the next step by walking the table down a static tree
template: a depth-d node of rank r takes `table[its parent's token][r]`, the
root being the last emitted token. One gather per depth fills the tree, and
drafts are point masses, so the point-mass tree rule keeps decoding lossless
under sampling.

Choices where the paper's code leaves one open:
- One table per row. A row's drafts then depend on its own text only, so its
  tokens per call do not change with the batch it runs in, and the scatter
  has no writes from two rows to one entry. It costs B·V·k int32 (8.4 MB a
  row for Gemma 3's 262k vocabulary at k = 8).
- Duplicate tokens in one window: the entry of the window index nearest the
  accepted path wins (a node on the path, else the latest index), decided by
  a scatter-max of priorities, so the result is deterministic.
- Before the first verify, each token of the prompt has its prompt successor
  as rank 0 (its last occurrence wins), so copying starts at the first step.
- Hot start: the table given as params (`carry` folds a call's final rows
  into one) seeds every row; entries never written stay unknown, and a node
  under an unknown rank is not drafted.
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
class SuccessorTable:
    table: jax.Array  # [B, V, k] int32: table[b, x] the target's top-k tokens after x, best first
    known: jax.Array  # [B, V] int32: how many of table[b, x]'s ranks hold a real successor (0, 1 or k)


def _winners(keys: jax.Array, priority: jax.Array, vocab: int) -> jax.Array:
    """[B, N] bool: entries whose priority (> 0 to take part) is the highest among the row's equal keys."""
    rows = jnp.arange(keys.shape[0])[:, None]
    best = jnp.zeros((keys.shape[0], vocab), priority.dtype).at[rows, keys].max(priority)
    return (priority > 0) & (best[rows, keys] == priority)


@dataclasses.dataclass(frozen=True)
class TokenRecycling:
    tree: StaticTree  # node ranks < width
    vocab: int
    width: int = 8  # k: successors kept per token

    @property
    def num_draft_tokens(self) -> int:
        return self.tree.size

    def empty(self) -> tuple[jax.Array, jax.Array]:
        """Params for a cold start: a [V, k] table with nothing known."""
        return jnp.zeros((self.vocab, self.width), jnp.int32), jnp.zeros((self.vocab,), jnp.int32)

    def init(self, params, prompts, prompt_len, new_slots, start):
        """params: a (table [V, k], known [V]) hot start, or None. Then every prompt bigram, as rank 0."""
        b, p = prompts.shape
        table, known = self.empty() if params is None else params
        table = jnp.broadcast_to(table, (b, *table.shape))
        known = jnp.broadcast_to(known, (b, self.vocab))
        j = jnp.arange(p - 1)[None, :]
        has_next = j + 1 < prompt_len[:, None]
        win = _winners(prompts[:, :-1], jnp.where(has_next, j + 1, 0), self.vocab)
        key = jnp.where(win, prompts[:, :-1], self.vocab)  # losers write out of range: dropped
        rows = jnp.arange(b)[:, None]
        table = table.at[rows, key, 0].set(prompts[:, 1:], mode="drop")
        known = known.at[rows, key].max(1, mode="drop")
        return SuccessorTable(table, known)

    def propose(self, params, state: SuccessorTable, ctx: Context):
        b, t = ctx.seq_len.shape[0], self.tree.size
        rows = jnp.arange(b)
        root = ctx.history[rows, ctx.seq_len - 1]
        tokens = jnp.zeros((b, t), jnp.int32)
        valid = jnp.zeros((b, t), bool)
        for d in range(1, max(self.tree.depth) + 1):  # one gather per depth: parents come first
            nodes = [i for i in range(t) if self.tree.depth[i] == d]
            parents = jnp.asarray([self.tree.parents[i] for i in nodes])
            ranks = jnp.asarray([self.tree.rank[i] for i in nodes])
            above = jnp.where(parents[None, :] < 0, root[:, None], tokens[:, jnp.maximum(parents, 0)])
            parent_ok = jnp.where(parents[None, :] < 0, True, valid[:, jnp.maximum(parents, 0)])
            tokens = tokens.at[:, nodes].set(state.table[rows[:, None], above, ranks[None, :]])
            valid = valid.at[:, nodes].set(parent_ok & (ranks[None, :] < state.known[rows[:, None], above]))
        valid &= ~ctx.done[:, None]
        return static_tree_draft(self.tree.parents, tokens, valid), state

    def row_summary(self, logits: jax.Array) -> tuple[jax.Array]:
        """The target's top-k after each scored window row: made inside the verify, so the loop never keeps
        the logits (jaxspec/drafters/base.py)."""
        return (vocab_reduce.top_k(logits, self.width)[1],)

    def update(self, params, state: SuccessorTable, ctx: Context, verified: Verified):
        """Every window token the target scored gets the target's top-k after it."""
        b, w1 = verified.window.shape
        idx = jnp.arange(w1)
        (top,) = verified.summary  # [B, 1 + T, k], zeros past the rows scored (never written: not scored)
        on_path = jnp.any(
            (verified.path[:, None, :] == idx[None, :, None]) & (idx[None, None, :] <= verified.n_accepted[:, None, None]),
            axis=2,
        )
        priority = jnp.where(verified.scored, 1 + idx[None, :] + w1 * on_path, 0)
        key = jnp.where(_winners(verified.window, priority, self.vocab), verified.window, self.vocab)
        rows = jnp.arange(b)[:, None]
        return SuccessorTable(
            state.table.at[rows, key].set(top, mode="drop"),
            state.known.at[rows, key].set(self.width, mode="drop"),
        )

    def carry(self, state: SuccessorTable) -> tuple[jax.Array, jax.Array]:
        """Hot-start params for the next call: per token, the last row that knows it (rows in batch
        order), else what the call began with."""
        b = state.known.shape[0]
        last = jnp.argmax(jnp.where(state.known > 0, jnp.arange(1, b + 1)[:, None], 0), axis=0)  # [V]
        vocab = jnp.arange(self.vocab)
        return state.table[last, vocab], state.known[last, vocab]
