"""The Block Transformer (global-to-local): a block decoder over blocks, a token decoder inside one block.

Sequence x_0 x_1 ... is cut into blocks b_j = x[jL : (j+1)L]. The block
decoder reads [start, E(b_0), E(b_1), ...] causally, E concatenating the
block's L token embeddings; its output c_j at input j (which has seen the
start block and b_0 .. b_{j-1}) is the context for block j. The token decoder
reads [prefix(c_j), x_{jL}, ..., x_{jL+L-2}] and predicts b_j's L tokens, the
first from the last prefix vector. The learned start block lets the first
block be predicted too, so every token of a sequence has a loss and a prompt
of any length, even shorter than a block, can be continued.

Decoding keeps one block-decoder KV entry per block (the source of the
throughput) and a local token-decoder cache of num_prefix + L - 1 slots,
reset at every block. The model owns its step, split in two so that the
engine's inner loop (jaxspec/unit_step.py) samples between them:

    step_in_unit(params, tokens, cache, rows)  records each row's new token in its block and, where
                                               the block is not full yet, runs the token decoder on it
    close_units(params, cache, rows)           for rows whose block is full: one block-decoder step,
                                               then the next block's prefix through the token decoder

After either, `cache.logits` holds every row's distribution for its next
token. Rows whose prompts end at different offsets in their blocks close their
first block at different inner steps and then stay aligned.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from models.block_config import ARCHITECTURE, MODEL_TYPE, BlockConfig
from models.decoder import _INIT_STD, _dense
from models.kv_cache import KVCache
from models.protocol import Start
from models.skinny_matmul import project_rows
from models.stacks import Stack, arange_rows, dotted_name, scratch_cache, select_rows, stack_sizes


class BlockEmbedder(nn.Module):
    """Block tokens [..., L] → block embeddings [..., D] (the L token embeddings concatenated, projected to D
    under the "projection" embedder), and the learned start block `start` [D] that precedes block 0."""

    config: BlockConfig
    dtype: jnp.dtype

    def setup(self):
        c = self.config
        init = nn.initializers.normal(_INIT_STD)
        self.embedding = self.param("embedding", init, (c.vocab_size, c.embedder_dim), jnp.float32)
        self.start = self.param("start", init, (c.block_decoder.hidden_size,), jnp.float32)
        if c.embedder == "projection":
            self.embedder_proj = _dense(c.block_decoder.hidden_size, False, self.dtype)

    def __call__(self, blocks):
        c = self.config
        x = self.embedding.astype(self.dtype)[blocks]
        x = x.reshape(*blocks.shape[:-1], c.block_length * c.embedder_dim)
        return self.embedder_proj(x) if c.embedder == "projection" else x


class BlockTransformerLM(nn.Module):
    config: BlockConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embedder = BlockEmbedder(c, self.dtype)
        self.block_decoder = Stack(c.block_decoder, self.dtype)
        self.context_proj = nn.Dense(
            c.num_prefix * c.token_decoder.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(_INIT_STD),
        )
        self.embed_tokens = nn.Embed(
            c.vocab_size, c.token_decoder.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
            embedding_init=nn.initializers.normal(_INIT_STD),
        )
        self.token_decoder = Stack(c.token_decoder, self.dtype)
        if not c.tie_word_embeddings:
            self.lm_head = _dense(c.vocab_size, False, self.dtype)

    def block_inputs(self, blocks):
        """[start, E(blocks[:, 0]), ...]: block tokens [B, N, L] → block-decoder inputs [B, N + 1, D]."""
        start = self.embedder.start.astype(self.dtype)
        start = jnp.broadcast_to(start, (blocks.shape[0], 1, start.shape[0]))
        return jnp.concatenate([start, self.embedder(blocks)], axis=1)

    def embed_blocks(self, blocks):
        return self.embedder(blocks)

    def run_blocks(self, x, positions, cache):
        return self.block_decoder(x, positions, cache)

    def injection(self, context):
        """Context [..., Db] → (prefix [..., P, Dt], what every token embedding gets added: [..., Dt] or 0)."""
        c = self.config
        prefix = self.context_proj(context).reshape(*context.shape[:-1], c.num_prefix, c.token_decoder.hidden_size)
        added = prefix[..., 0, :] if c.injection == "sum" else jnp.zeros_like(prefix[..., 0, :])
        return prefix, added

    def token_inputs(self, tokens, added):
        """Token embeddings [..., T, Dt] with the context added (the "sum" injection; 0 otherwise)."""
        return self.embed_tokens(tokens) + added[..., None, :]

    def run_tokens(self, x, positions, cache):
        return self.token_decoder(x, positions, cache)

    def head(self, hidden):
        if self.config.tie_word_embeddings:
            return project_rows(hidden, self.embed_tokens.embedding.astype(hidden.dtype)).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def __call__(self, tokens):
        """Teacher-forced logits [B, T, V] for tokens [B, T]: logits[:, t] scores token t + 1."""
        c = self.config
        size, p = c.block_length, c.num_prefix
        b, t = tokens.shape
        n = t // size + 1  # blocks whose tokens are scored: the one holding token t is the last
        blocks = jnp.pad(tokens, ((0, 0), (0, n * size - t))).reshape(b, n, size)
        x = self.block_inputs(blocks[:, : n - 1])
        contexts, _ = self.run_blocks(x, arange_rows(b, n), scratch_cache(c.block_decoder, b, n, self.dtype))
        prefix, added = self.injection(contexts)  # [B, N, P, Dt], [B, N, Dt]
        window = jnp.concatenate([prefix, self.token_inputs(blocks[:, :, : size - 1], added)], axis=2)
        width = p + size - 1
        scratch = scratch_cache(c.token_decoder, b * n, width, self.dtype)
        hidden, _ = self.run_tokens(window.reshape(b * n, width, -1), arange_rows(b * n, width), scratch)
        logits = self.head(hidden[:, p - 1 :]).reshape(b, n * size, -1)
        return logits[:, 1 : t + 1]


@struct.dataclass
class BlockCache:
    """Decoding state of a Block Transformer, per row b:

    blocks      the block decoder's cache: slot 0 the start block, slot j + 1 block j; lengths[b] = complete
                blocks + 1
    local       the token decoder's cache for the current block: the prefix, then the block's tokens but
                its last
    block       [B, L] the current block's tokens so far, fill[b] of them
    added       [B, Dt] what the "sum" injection adds to each token embedding of the current block (else 0)
    logits      [B, V] float32: the distribution of the row's next token
    lengths     [B] tokens the row has consumed
    """

    blocks: KVCache
    local: KVCache
    block: jax.Array
    fill: jax.Array
    added: jax.Array
    logits: jax.Array
    lengths: jax.Array

    def logical_axes(self) -> "BlockCache":
        return self.replace(
            blocks=self.blocks.logical_axes(),
            local=self.local.logical_axes(),
            block=("batch", None),
            fill=("batch",),
            added=("batch", None),
            logits=("batch", "vocab"),
            lengths=("batch",),
        )


@dataclasses.dataclass(frozen=True)
class BlockTransformer:
    """The Block Transformer as the engine sees it: static config + pure functions of params."""

    config: BlockConfig
    dtype: str = "float32"

    is_encoder_decoder = False

    @property
    def module(self) -> BlockTransformerLM:
        return BlockTransformerLM(self.config, jnp.dtype(self.dtype))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    @property
    def unit_len(self) -> int:
        """Tokens per unit of the outer loop: the engine decodes this model block by block."""
        return self.config.block_length

    def describe(self) -> dict:
        c = self.config

        return {
            "architecture": ARCHITECTURE,
            "model_type": MODEL_TYPE,
            "block_length": c.block_length,
            "embedder": c.embedder,
            "context_injection": c.injection,
            "num_prefix_tokens": c.num_prefix,
            "block_decoder": stack_sizes(c.block_decoder),
            "token_decoder": stack_sizes(c.token_decoder),
            "vocab_size": c.vocab_size,
            "tied_embeddings": c.tie_word_embeddings,
            "max_positions": c.max_position_embeddings,
        }

    @staticmethod
    def hf_tensor_name(path: tuple[str, ...]) -> str:
        """`block_decoder/layers_3/self_attn/q_proj/kernel` → `block_decoder.layers.3.self_attn.q_proj.weight`;
        the start block is `embedder.start`."""
        return dotted_name(path, ("bias", "start"))

    @property
    def hf_aliases(self) -> frozenset[str]:
        return frozenset({"lm_head.weight"}) if self.config.tie_word_embeddings else frozenset()

    def for_checkpoint(self, tensor_names: set[str]) -> "BlockTransformer":
        return self

    def init_params(self, rng: jax.Array):
        return self.module.init(rng, jnp.zeros((1, self.config.block_length), jnp.int32))["params"]

    def sequence_logits(self, params, tokens) -> jax.Array:
        """Teacher-forced causal logits [B, T, V] for whole sequences (training, scoring)."""
        return self.module.apply({"params": params}, tokens)

    def output_embedding(self, params) -> jax.Array:
        if self.config.tie_word_embeddings:
            return params["embed_tokens"]["embedding"]
        return params["lm_head"]["kernel"].T

    def init_cache(self, batch: int, max_len: int, dtype=None) -> BlockCache:
        """A cache for sequences of up to max_len tokens."""
        c = self.config
        dtype = dtype or jnp.dtype(self.dtype)
        bd, td = c.block_decoder, c.token_decoder
        return BlockCache(
            blocks=KVCache.zeros(bd.num_layers, batch, max_len // c.block_length + 2, bd.num_kv_heads, bd.head_dim, dtype),
            local=KVCache.zeros(
                td.num_layers, batch, c.num_prefix + c.block_length - 1, td.num_kv_heads, td.head_dim, dtype
            ),
            block=jnp.zeros((batch, c.block_length), jnp.int32),
            fill=jnp.zeros((batch,), jnp.int32),
            added=jnp.zeros((batch, td.hidden_size), dtype),
            logits=jnp.zeros((batch, c.vocab_size), jnp.float32),
            lengths=jnp.zeros((batch,), jnp.int32),
        )

    def _apply(self, params, method, *args):
        return self.module.apply({"params": params}, *args, method=method)

    def _open_blocks(self, params, cache: BlockCache, contexts, rows) -> BlockCache:
        """For rows: an empty block conditioned on contexts [B, Db]: the prefix through the token decoder."""
        c = self.config
        b = contexts.shape[0]
        prefix, added = self._apply(params, BlockTransformerLM.injection, contexts)
        local = cache.local.with_lengths(jnp.where(rows, 0, cache.local.lengths))
        hidden, local = self._apply(params, BlockTransformerLM.run_tokens, prefix, arange_rows(b, c.num_prefix), local)
        logits = self._apply(params, BlockTransformerLM.head, hidden[:, -1])
        return cache.replace(
            local=local.with_lengths(jnp.where(rows, c.num_prefix, cache.local.lengths)),
            fill=jnp.where(rows, 0, cache.fill),
            added=select_rows(rows, added.astype(cache.added.dtype), cache.added),
            logits=select_rows(rows, logits, cache.logits),
        )

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        """The whole prompt consumed: its complete blocks through the block decoder, the partial last block's
        tokens through the token decoder, and the next token's logits in `cache.logits`. Each row's last
        block is handled at its own offset: nothing is padded into a block."""
        c = self.config
        size = c.block_length
        b, p = prompts.shape
        cache = self.init_cache(b, p + new_slots)
        if constrain is not None:
            cache = constrain(cache)
        n = p // size  # most complete blocks a row can have
        complete = prompt_len // size
        blocks = prompts[:, : n * size].reshape(b, n, size)
        x = self._apply(params, BlockTransformerLM.block_inputs, blocks)
        contexts, global_cache = self._apply(params, BlockTransformerLM.run_blocks, x, arange_rows(b, n + 1), cache.blocks)
        context = jnp.take_along_axis(contexts, complete[:, None, None], axis=1)[:, 0]
        everyone = jnp.ones((b,), bool)
        cache = self._open_blocks(params, cache.replace(blocks=global_cache.with_lengths(complete + 1)), context, everyone)
        # The partial last block (r = prompt_len % L tokens) through the token decoder in one window.
        r = prompt_len - complete * size
        if size == 1:  # every block is complete: nothing partial to read
            return Start(cache.replace(lengths=prompt_len), prompts, prompt_len)
        index = jnp.clip(complete[:, None] * size + jnp.arange(size)[None, :], 0, p - 1)
        partial = jnp.where(jnp.arange(size)[None, :] < r[:, None], jnp.take_along_axis(prompts, index, axis=1), 0)
        window = self._apply(params, BlockTransformerLM.token_inputs, partial[:, : size - 1], cache.added)
        positions = c.num_prefix + arange_rows(b, size - 1)
        hidden, local = self._apply(params, BlockTransformerLM.run_tokens, window, positions, cache.local)
        last = jnp.clip(r - 1, 0, size - 2)
        logits = self._apply(params, BlockTransformerLM.head, jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0])
        cache = cache.replace(
            local=local.with_lengths(c.num_prefix + r),
            block=partial,
            fill=r,
            logits=jnp.where((r > 0)[:, None], logits, cache.logits),
            lengths=prompt_len,
        )
        return Start(cache, prompts, prompt_len)

    def step_in_unit(self, params, tokens, cache: BlockCache, rows) -> BlockCache:
        """Each row in `rows` takes tokens[b] as its block's next token; where the block still has room
        after it, the token decoder reads it and `logits` move on (skipped when no row needs it)."""
        c = self.config
        b = tokens.shape[0]
        block = cache.block.at[jnp.arange(b), jnp.where(rows, cache.fill, c.block_length)].set(tokens, mode="drop")
        fill = cache.fill + rows.astype(jnp.int32)
        feed = rows & (fill < c.block_length)
        cache = cache.replace(block=block, fill=fill, lengths=cache.lengths + rows.astype(jnp.int32))

        def run(cache):
            x = self._apply(params, BlockTransformerLM.token_inputs, tokens[:, None], cache.added)
            positions = cache.local.lengths[:, None]
            hidden, local = self._apply(params, BlockTransformerLM.run_tokens, x, positions, cache.local)
            logits = self._apply(params, BlockTransformerLM.head, hidden[:, 0])
            return cache.replace(
                local=local.with_lengths(cache.local.lengths + feed.astype(jnp.int32)),
                logits=select_rows(feed, logits, cache.logits),
            )

        return jax.lax.cond(jnp.any(feed), run, lambda cache: cache, cache)

    def unit_full(self, cache: BlockCache) -> jax.Array:
        """[B] bool: the row's current block holds all its tokens and waits for close_units."""
        return cache.fill >= self.config.block_length

    def close_units(self, params, cache: BlockCache, rows) -> BlockCache:
        """For rows (whose blocks are full): the block through the block decoder (one KV entry), and the
        next block opened from its output. Skipped when no row closes."""

        def run(cache):
            x = self._apply(params, BlockTransformerLM.embed_blocks, cache.block[:, None])
            positions = cache.blocks.lengths[:, None]
            context, blocks = self._apply(params, BlockTransformerLM.run_blocks, x, positions, cache.blocks)
            blocks = blocks.with_lengths(cache.blocks.lengths + rows.astype(jnp.int32))
            return self._open_blocks(params, cache.replace(blocks=blocks), context[:, 0], rows)

        return jax.lax.cond(jnp.any(rows), run, lambda cache: cache, cache)
