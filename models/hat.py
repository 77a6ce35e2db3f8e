"""HAT, the hierarchical autoregressive transformer: bytes in, words in the backbone, bytes out.

A byte sequence x_0 x_1 ... is cut into words by models/hat_words.py (a causal
byte automaton). Per byte, the encoder (byte embedding + sliding-window layers)
gives e_j. Per word, the connector's learned query attends over that word's
e_j (one query per word, per head) into the word embedding w_i, and the
backbone (decoder-only layers over word positions, no embedding or head)
gives h_i. The decoder reads, at byte j of word i, e_j plus a projection of
the predictive embedding p_i = h_{i-1} (p_0 a learned vector): with a single
key, cross-attention to p_i reduces to that projection. Its sliding-window
layers and head over the 257 symbols (bytes, end of text) give the logits of
byte j + 1. A word's first byte is therefore predicted before the backbone has
read the word it ends, and the backbone runs once per word, when the byte that
begins the next word has been drawn.

Decoding follows the engine's two-level protocol (models/protocol.py,
jaxspec/unit_step.py): a word is the unit.

    step_in_unit(params, bytes, cache, rows)   per row: the automaton reads the byte; one that begins a
                                               word is held (the row waits), any other goes through the
                                               encoder, the connector's running pool and the decoder
    close_units(params, cache, rows)           for waiting rows: the pooled word through one backbone
                                               step, then the held byte read under the new predictive
                                               embedding

The connector pools with an online softmax (running max, sum and weighted
values per head), so the current word's bytes never need to be kept.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from models import hat_words
from models.decoder import _INIT_STD, _dense
from models.hat_config import ARCHITECTURE, MODEL_TYPE, HATConfig
from models.kv_cache import KVCache
from models.protocol import Start
from models.stacks import Stack, arange_rows, dotted_name, scratch_cache, select_rows, stack_sizes

# Training gives the backbone one word slot per this many bytes instead of one per byte. Words average
# 8.2 bytes in the standard library's code (indentation joins the word after it) and about 6 in English
# prose; over 300 rows of 856 bytes of that code, slots at one per 4 bytes left 0.0004% of the bytes
# without one (one per 6: 0.75%).
TRAIN_BYTES_PER_WORD = 4
_NEG = -1e30  # the running max of an empty word: exp(_NEG - s) is 0 for any score s


class Connector(nn.Module):
    """One learned query per head attending over a word's byte activations: byte scores and values, and the
    pooled heads' projection to the backbone's width."""

    config: HATConfig
    dtype: jnp.dtype

    def setup(self):
        c = self.config
        h, d = c.connector_heads, c.connector_head_dim
        self.query = self.param("query", nn.initializers.normal(_INIT_STD), (h, d), jnp.float32)
        self.key = _dense(h * d, False, self.dtype)
        self.value = _dense(h * d, False, self.dtype)
        self.out = _dense(c.backbone.hidden_size, False, self.dtype)

    def terms(self, enc):
        """Byte activations [..., Db] → (scores [..., H] float32, values [..., H, Dh])."""
        c = self.config
        h, d = c.connector_heads, c.connector_head_dim
        k = self.key(enc).reshape(*enc.shape[:-1], h, d)
        scores = jnp.einsum("...hd,hd->...h", k.astype(jnp.float32), self.query) / jnp.sqrt(float(d))
        return scores, self.value(enc).reshape(*enc.shape[:-1], h, d)

    def project(self, pooled):
        """Pooled heads [..., H, Dh] → word embeddings [..., Dw]."""
        return self.out(pooled.reshape(*pooled.shape[:-2], -1).astype(self.dtype))

    def __call__(self, enc):
        return self.project(self.terms(enc)[1])


class Guide(nn.Module):
    """The decoder's view of a word's predictive embedding: p_0 (`first`, before any word) and the
    projection of p to the byte width that every byte of the word adds to its input."""

    config: HATConfig
    dtype: jnp.dtype

    def setup(self):
        self.first = self.param("first", nn.initializers.normal(_INIT_STD), (self.config.backbone.hidden_size,), jnp.float32)
        self.proj = _dense(self.config.byte_width, False, self.dtype)

    def __call__(self, predictive):
        return self.proj(predictive)


class HATLM(nn.Module):
    config: HATConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embed_bytes = nn.Embed(
            c.vocab_size, c.byte_width, dtype=self.dtype, param_dtype=jnp.float32,
            embedding_init=nn.initializers.normal(_INIT_STD),
        )
        self.encoder = Stack(c.encoder, self.dtype)
        self.connector = Connector(c, self.dtype)
        self.backbone = Stack(c.backbone, self.dtype)
        self.guide = Guide(c, self.dtype)
        self.decoder = Stack(c.decoder, self.dtype)
        self.lm_head = _dense(c.vocab_size, False, self.dtype)

    def encode(self, data, positions, cache):
        """Bytes [B, T] → (encoder activations [B, T, Db], cache)."""
        return self.encoder(self.embed_bytes(data), positions, cache)

    def pool_terms(self, enc):
        return self.connector.terms(enc)

    def word_embedding(self, pooled):
        return self.connector.project(pooled)

    def run_backbone(self, words, positions, cache):
        return self.backbone(words, positions, cache)

    def first_word(self):
        return self.guide.first.astype(self.dtype)

    def decode(self, enc, predictive, positions, cache):
        """Byte activations [B, T, Db] and each byte's predictive embedding [B, T, Dw] → (logits [B, T, V]
        float32, cache)."""
        hidden, cache = self.decoder(enc + self.guide(predictive), positions, cache)
        return self.lm_head(hidden).astype(jnp.float32), cache

    def __call__(self, data, max_words: int | None = None):
        """(teacher-forced logits [B, S, V] for bytes [B, S] (words cut from byte 0): logits[:, j] scores
        byte j + 1; each byte's word index [B, S]). The backbone has max_words word slots (default S, every
        word); bytes of later words read the last slot's prediction, so only the first max_words words are
        exact."""
        c = self.config
        b, s = data.shape
        n = s if max_words is None else max_words
        starts = hat_words.scan_words(data, c.max_word_bytes)[0]
        index = jnp.cumsum(starts, axis=1) - 1
        word = jnp.minimum(index, n - 1)  # [B, S]
        enc, _ = self.encode(data, arange_rows(b, s), scratch_cache(c.encoder, b, s, self.dtype))
        _, total, acc = segment_pool(*self.pool_terms(enc), word, n)
        hidden, _ = self.run_backbone(
            self.word_embedding(pooled(total, acc)), arange_rows(b, n), scratch_cache(c.backbone, b, n, self.dtype)
        )
        first = jnp.broadcast_to(self.first_word(), (b, 1, hidden.shape[-1]))
        predictive = jnp.concatenate([first, hidden[:, : n - 1]], axis=1)  # p_i = h_{i-1}
        per_byte = jnp.take_along_axis(predictive, word[..., None], axis=1)
        logits, _ = self.decode(enc, per_byte, arange_rows(b, s), scratch_cache(c.decoder, b, s, self.dtype))
        return logits, index


def segment_pool(scores, values, word, n: int):
    """Per row, word and head, the connector's softmax over the word's bytes as (max [B, n, H], sum of
    weights [B, n, H], weighted values [B, n, H, Dh]), from scores [B, S, H], values [B, S, H, Dh] and each
    byte's word index [B, S]: the state the decoding pool keeps for its current word."""
    b, s, h = scores.shape
    ids = (jnp.arange(b)[:, None] * n + word).reshape(-1)
    flat = scores.reshape(b * s, h)
    peak = jax.ops.segment_max(flat, ids, num_segments=b * n)
    weights = jnp.exp(flat - peak[ids])
    total = jax.ops.segment_sum(weights, ids, num_segments=b * n)
    acc = jax.ops.segment_sum(weights[..., None] * values.reshape(b * s, h, -1).astype(jnp.float32), ids, num_segments=b * n)
    return peak.reshape(b, n, h), total.reshape(b, n, h), acc.reshape(b, n, h, -1)


def pooled(total, acc):
    """The pool's weighted mean of values [..., H, Dh] (zeros for a word without bytes)."""
    return acc / jnp.where(total > 0, total, 1.0)[..., None]


@struct.dataclass
class HATCache:
    """Decoding state of a HAT, per row b:

    encoder, decoder   byte caches (a byte's K/V at its position; attention reads the last `sliding_window`)
    words              the backbone's cache; lengths[b] = complete words (each one backbone step)
    state, word_len    the splitter automaton after the row's last byte (models/hat_words.py)
    pool_max, pool_sum, pool_acc
                       the connector's online softmax over the current word's bytes: [B, H], [B, H], [B, H, Dh]
    predictive         [B, Dw] the current word's predictive embedding (p_0, or the backbone's last output)
    waiting, pending   the row drew a byte that begins a word and holds it until close_units
    logits             [B, V] float32: the distribution of the row's next byte
    lengths            [B] bytes the row has consumed (a held byte included)
    """

    encoder: KVCache
    decoder: KVCache
    words: KVCache
    state: jax.Array
    word_len: jax.Array
    pool_max: jax.Array
    pool_sum: jax.Array
    pool_acc: jax.Array
    predictive: jax.Array
    waiting: jax.Array
    pending: jax.Array
    logits: jax.Array
    lengths: jax.Array

    def logical_axes(self) -> "HATCache":
        return self.replace(
            encoder=self.encoder.logical_axes(),
            decoder=self.decoder.logical_axes(),
            words=self.words.logical_axes(),
            state=("batch",),
            word_len=("batch",),
            pool_max=("batch", None),
            pool_sum=("batch", None),
            pool_acc=("batch", None, None),
            predictive=("batch", None),
            waiting=("batch",),
            pending=("batch",),
            logits=("batch", "vocab"),
            lengths=("batch",),
        )


@dataclasses.dataclass(frozen=True)
class HAT:
    """HAT as the engine sees it: static config + pure functions of params. Its tokens are bytes."""

    config: HATConfig
    dtype: str = "float32"

    is_encoder_decoder = False
    byte_level = True  # token ids are byte values (and end of text): no tokenizer file
    # The engine closes words (one batched backbone step) once half of the live rows wait, not all: rows
    # finish words of different lengths, and waiting for the longest idles the others. Measured on a
    # bench HAT with one-layer byte stacks (bench/hat.py), batch 8, sampled: 16.8k bytes/s at one half,
    # 10.0k waiting for all rows, 14.9k at a quarter (more backbone steps).
    close_quorum = 0.5

    @property
    def module(self) -> HATLM:
        return HATLM(self.config, jnp.dtype(self.dtype))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    @property
    def unit_len(self) -> int:
        """The most bytes a row draws before its word closes: a word is cut at max_word_bytes."""
        return self.config.max_word_bytes

    def describe(self) -> dict:
        c = self.config

        return {
            "architecture": ARCHITECTURE,
            "model_type": MODEL_TYPE,
            "encoder": stack_sizes(c.encoder),
            "backbone": stack_sizes(c.backbone),
            "decoder": stack_sizes(c.decoder),
            "connector_heads": c.connector_heads,
            "sliding_window": c.sliding_window,
            "max_word_bytes": c.max_word_bytes,
            "vocab_size": c.vocab_size,
            "max_positions": c.max_position_embeddings,
        }

    @staticmethod
    def hf_tensor_name(path: tuple[str, ...]) -> str:
        """`encoder/layers_1/mlp/up_proj/kernel` → `encoder.layers.1.mlp.up_proj.weight`; the connector's query
        and the first predictive embedding keep their names (`connector.query`, `guide.first`)."""
        return dotted_name(path, ("bias", "query", "first"))

    hf_aliases = frozenset()

    def for_checkpoint(self, tensor_names: set[str]) -> "HAT":
        return self

    def init_params(self, rng: jax.Array):
        return self.module.init(rng, jnp.zeros((1, 4), jnp.int32))["params"]

    def sequence_logits(self, params, tokens) -> jax.Array:
        """Teacher-forced causal logits [B, S, V] for whole byte sequences (scoring): every word exact."""
        return self.module.apply({"params": params}, tokens)[0]

    def training_logits(self, params, tokens) -> tuple[jax.Array, jax.Array]:
        """(logits [B, S, V], weights [B, S]) for training: the backbone gets S / TRAIN_BYTES_PER_WORD word
        slots instead of S (its cost at the word rate, not the byte rate), and the bytes of words past them,
        whose logits are inexact, weigh 0."""
        slots = max(1, tokens.shape[1] // TRAIN_BYTES_PER_WORD)
        logits, index = self.module.apply({"params": params}, tokens, slots)
        # Byte j's logits read p of its own word, the backbone's output for the word before: exact while
        # byte j's word has a slot of its own.
        return logits, index < slots

    def output_embedding(self, params) -> jax.Array:
        return params["lm_head"]["kernel"].T

    def init_cache(self, batch: int, max_len: int, dtype=None) -> HATCache:
        """A cache for sequences of up to max_len bytes (and so at most max_len words)."""
        c = self.config
        dtype = dtype or jnp.dtype(self.dtype)
        h, d = c.connector_heads, c.connector_head_dim

        def kv(s):
            return KVCache.zeros(s.num_layers, batch, max_len, s.num_kv_heads, s.head_dim, dtype)

        zeros = jnp.zeros((batch,), jnp.int32)
        return HATCache(
            encoder=kv(c.encoder),
            decoder=kv(c.decoder),
            words=kv(c.backbone),
            state=zeros,
            word_len=zeros,
            pool_max=jnp.full((batch, h), _NEG, jnp.float32),
            pool_sum=jnp.zeros((batch, h), jnp.float32),
            pool_acc=jnp.zeros((batch, h, d), jnp.float32),
            predictive=jnp.zeros((batch, c.backbone.hidden_size), dtype),
            waiting=jnp.zeros((batch,), bool),
            pending=zeros,
            logits=jnp.zeros((batch, c.vocab_size), jnp.float32),
            lengths=zeros,
        )

    def _apply(self, params, method, *args):
        return self.module.apply({"params": params}, *args, method=method)

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        """The whole prompt consumed: every byte through the encoder and decoder, every complete word
        through the backbone, the last (maybe incomplete) word in the connector's running pool, and the
        next byte's logits in `cache.logits`. Each row at its own length: nothing is padded into a word."""
        c = self.config
        b, p = prompts.shape
        cache = self.init_cache(b, p + new_slots)
        if constrain is not None:
            cache = constrain(cache)
        inside = jnp.arange(p)[None, :] < prompt_len[:, None]
        starts, states, word_lens = hat_words.scan_words(prompts, c.max_word_bytes)
        word = jnp.cumsum(starts & inside, axis=1) - 1  # [B, P]; a row's bytes past its end stay in its last word
        words = word[jnp.arange(b), prompt_len - 1] + 1
        positions = arange_rows(b, p)
        enc, encoder = self._apply(params, HATLM.encode, prompts, positions, cache.encoder)
        scores, values = self._apply(params, HATLM.pool_terms, enc)
        scores = jnp.where(inside[..., None], scores, _NEG)  # padding adds nothing to the last word's pool
        peak, total, acc = segment_pool(scores, values, word, p)
        embedded = self._apply(params, HATLM.word_embedding, pooled(total, acc))
        hidden, backbone = self._apply(params, HATLM.run_backbone, embedded, positions, cache.words)
        first = jnp.broadcast_to(self._apply(params, HATLM.first_word), (b, 1, hidden.shape[-1]))
        predictive = jnp.concatenate([first, hidden[:, : p - 1]], axis=1)
        per_byte = jnp.take_along_axis(predictive, word[..., None], axis=1)
        logits, decoder = self._apply(params, HATLM.decode, enc, per_byte, positions, cache.decoder)
        last = prompt_len - 1
        current = (words - 1)[:, None]  # the word in progress

        def at_current(x):
            return jnp.take_along_axis(x, current.reshape((b, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0]

        cache = cache.replace(
            encoder=encoder.with_lengths(prompt_len),
            decoder=decoder.with_lengths(prompt_len),
            words=backbone.with_lengths(words - 1),
            state=states[jnp.arange(b), last],
            word_len=word_lens[jnp.arange(b), last],
            pool_max=at_current(peak),
            pool_sum=at_current(total),
            pool_acc=at_current(acc),
            predictive=at_current(predictive).astype(cache.predictive.dtype),
            logits=logits[jnp.arange(b), last],
            lengths=prompt_len,
        )
        return Start(cache, prompts, prompt_len)

    def _read_bytes(self, params, cache: HATCache, data, rows, new_word) -> HATCache:
        """Rows read one byte each (data [B]) at their next position: encoder, the connector's pool (a fresh
        one where new_word), decoder, logits. Other rows' states are kept (their caches get a scratch
        write beyond their lengths, overwritten when they next read)."""
        positions = cache.lengths[:, None] - 1  # the byte was counted in lengths when drawn
        enc, encoder = self._apply(params, HATLM.encode, data[:, None], positions, cache.encoder)
        scores, values = self._apply(params, HATLM.pool_terms, enc[:, 0])
        peak = jnp.where(new_word[:, None], _NEG, cache.pool_max)
        total = jnp.where(new_word[:, None], 0.0, cache.pool_sum)
        acc = jnp.where(new_word[:, None, None], 0.0, cache.pool_acc)
        new_peak = jnp.maximum(peak, scores)
        scale, weight = jnp.exp(peak - new_peak), jnp.exp(scores - new_peak)
        total = total * scale + weight
        acc = acc * scale[..., None] + weight[..., None] * values.astype(jnp.float32)
        logits, decoder = self._apply(params, HATLM.decode, enc, cache.predictive[:, None], positions, cache.decoder)
        step = rows.astype(jnp.int32)
        return cache.replace(
            encoder=encoder.with_lengths(cache.encoder.lengths + step),
            decoder=decoder.with_lengths(cache.decoder.lengths + step),
            pool_max=select_rows(rows, new_peak, cache.pool_max),
            pool_sum=select_rows(rows, total, cache.pool_sum),
            pool_acc=select_rows(rows, acc, cache.pool_acc),
            logits=select_rows(rows, logits[:, 0], cache.logits),
        )

    def step_in_unit(self, params, tokens, cache: HATCache, rows) -> HATCache:
        """Each row in `rows` takes byte tokens[b]: one that begins a word is held (the row waits for
        close_units); any other is read at once (skipped when no row reads)."""
        c = self.config
        starts, state, word_len = hat_words.step(cache.state, cache.word_len, tokens, c.max_word_bytes)
        hold = rows & starts
        feed = rows & ~starts
        cache = cache.replace(
            state=jnp.where(rows, state, cache.state),
            word_len=jnp.where(rows, word_len, cache.word_len),
            waiting=cache.waiting | hold,
            pending=jnp.where(hold, tokens, cache.pending),
            lengths=cache.lengths + rows.astype(jnp.int32),
        )
        no_reset = jnp.zeros_like(rows)
        return jax.lax.cond(
            jnp.any(feed), lambda cache: self._read_bytes(params, cache, tokens, feed, no_reset), lambda cache: cache, cache
        )

    def unit_full(self, cache: HATCache) -> jax.Array:
        """[B] bool: the row holds the first byte of its next word; its word waits for close_units."""
        return cache.waiting

    def close_units(self, params, cache: HATCache, rows) -> HATCache:
        """For rows (waiting): the pooled word through one backbone step, its output the new predictive
        embedding, then the held byte read as the new word's first. Skipped when no row closes."""

        def run(cache):
            embedded = self._apply(params, HATLM.word_embedding, pooled(cache.pool_sum, cache.pool_acc)[:, None])
            hidden, words = self._apply(params, HATLM.run_backbone, embedded, cache.words.lengths[:, None], cache.words)
            cache = cache.replace(
                words=words.with_lengths(cache.words.lengths + rows.astype(jnp.int32)),
                predictive=select_rows(rows, hidden[:, 0].astype(cache.predictive.dtype), cache.predictive),
                waiting=cache.waiting & ~rows,
            )
            return self._read_bytes(params, cache, cache.pending, rows, rows)

        return jax.lax.cond(jnp.any(rows), run, lambda cache: cache, cache)
