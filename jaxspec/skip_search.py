"""Choosing which sub-layers a self-drafter skips (SWIFT's optimisation phase), from the text at hand.

A candidate skip set is scored the way it will be used: the full model's K/V
of the context are cached, then the skipped model reads the last
`context_window` tokens of each row teacher-forced, on top of that cache, and
its argmax at each position is compared with the full model's. The share that
agree, alpha, is the chance a greedy draft is accepted; with drafts of K
tokens a step then emits E = (1 - alpha^(K+1)) / (1 - alpha) tokens on
average, and costs K draft forwards of relative cost r (the weights the
skipped model still reads over all of them: decoding is memory-bound) plus a
verify of cost c. The search maximises E / (K r + c). With a draft
vocabulary of N ids (jaxspec/context_vocab.py) the skipped model's argmax is
taken over each row's context tokens and its head reads N rows, not V.

Every candidate runs through one compiled program: the skip set enters as
0/1 gates on each sub-layer's contribution (models/layer_skip.py), not as a
static set. First and last layers are never skipped (SWIFT's rule: they
carry the embedding and the head's features). The search scores each
sub-layer alone, adds them greedily from the least harmful while the
objective improves, then spends what is left of its budget on swaps, all
within `budget` scored candidates.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import vocab_reduce
from jaxspec.atomic import atomic_file
from jaxspec.errors import InputError
from models.layer_skip import SkipSet, SkipSetError

CONTEXT_WINDOW = 32  # SWIFT's default: the last 32 tokens are teacher-forced
DEFAULT_BUDGET = 64  # candidate sets scored
SWAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class SearchResult:
    skip: SkipSet
    agreement: float  # alpha of the chosen set on the context
    draft_cost: float  # r: its forward's weights over the full model's
    expected_speedup: float  # E / (K r + c)
    evaluations: int  # candidate sets scored


def sublayer_costs(model, params, head_rows: int | None = None) -> tuple[np.ndarray, float]:
    """([2, L] parameters read by each attention / MLP sub-layer, parameters read by every forward whatever
    it skips: the head's matrix (head_rows of it, or all) and the final norm)."""
    def size(tree):
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))

    n = model.config.num_layers
    costs = np.zeros((2, n))
    for i in range(n):
        layer = params[f"layers_{i}"]
        costs[0, i] = size(layer["self_attn"])
        costs[1, i] = size(layer["mlp"])
    v, d = model.output_embedding(params).shape
    return costs, float(min(head_rows or v, v) * d + size(params["norm"]))


def draft_cost(model, params, skip: SkipSet, draft_vocab: int | None = None) -> float:
    """r: the weights a forward through `skip` with a head of draft_vocab rows reads, over the full model's."""
    return _weight_share(sublayer_costs(model, params, draft_vocab), sublayer_costs(model, params), skip)


def _weight_share(draft: tuple[np.ndarray, float], full: tuple[np.ndarray, float], skip: SkipSet) -> float:
    """draft_cost from sublayer_costs of the draft's head and of the full model's."""
    (costs, fixed), (full_costs, full_fixed) = draft, full
    skipped = costs[0, list(skip.attention)].sum() + costs[1, list(skip.mlp)].sum()
    return float((fixed + costs.sum() - skipped) / (full_fixed + full_costs.sum()))


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens a step emits when each of k drafts is accepted with chance alpha while its predecessors were."""
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def _context(tokens: Sequence[Sequence[int]], window: int, context_share: float = 0.0):
    """(padded [B, P], lengths [B], window starts [B], window tokens [B, T], valid [B, T]): each row's last
    T <= window tokens after at least one token of context, and after at least context_share of the row."""
    rows = [list(t) for t in tokens if len(t) >= 2]
    if not rows:
        raise InputError("the skip-layer search needs a prompt of at least 2 tokens")
    p = max(len(r) for r in rows)
    t = min(window, p - 1)
    padded = np.zeros((len(rows), p), np.int32)
    lengths = np.array([len(r) for r in rows], np.int32)
    for b, r in enumerate(rows):
        padded[b, : len(r)] = r
    starts = np.maximum(lengths - t, np.maximum(np.ceil(lengths * context_share).astype(np.int32), 1))
    idx = np.minimum(starts[:, None] + np.arange(t)[None, :], p - 1)
    valid = (starts[:, None] + np.arange(t)[None, :]) < lengths[:, None]
    return padded, lengths, starts, np.take_along_axis(padded, idx, axis=1), valid


def _context_ids(padded: np.ndarray, predicted: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """[B, size]: the draft vocabulary each row would hold on reaching its window (jaxspec/context_vocab.py):
    its distinct tokens before the window and the full model's predictions there, in order of appearance,
    padded with the first."""
    ids = np.zeros((len(padded), size), np.int32)
    for b, (row, guess, n) in enumerate(zip(padded, predicted, starts)):
        distinct = list(dict.fromkeys(np.stack([row[:n], guess[:n]], axis=1).reshape(-1).tolist()))[:size]
        ids[b] = distinct + [distinct[0]] * (size - len(distinct))
    return ids


def agreement_scorer(
    model, params, tokens: Sequence[Sequence[int]], window: int = CONTEXT_WINDOW, draft_vocab: int | None = None
):
    """gates [2, L] -> alpha: how often the gated model's argmax (over each row's context ids when
    draft_vocab is given) equals the full model's over the context.

    With a draft vocabulary the window starts after at least half of each row: the vocabulary is what the
    row holds on reaching the window, so a window over a short prompt's every token would score against the
    ids of its first token alone."""
    arrays = _context(tokens, window, 0.5 if draft_vocab is not None else 0.0)
    padded, lengths, starts, win_tokens, valid = (jnp.asarray(a) for a in arrays)
    b, p = padded.shape
    t = win_tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    full = model.forward(params, padded, positions, model.init_cache(b, p + t))
    predicted = vocab_reduce.argmax(full.logits)
    # The full model's prediction after each window token, and its cache of everything before the window.
    want = jnp.take_along_axis(predicted, starts[:, None] + jnp.arange(t)[None, :], axis=1, mode="clip")
    vocab = None
    if draft_vocab is not None:
        vocab = jnp.asarray(_context_ids(arrays[0], np.asarray(predicted), arrays[2], draft_vocab))
    cache = full.cache.with_lengths(starts)
    win_positions = starts[:, None] + jnp.arange(t)[None, :]

    @jax.jit
    def score(gates):
        out = model.forward(params, win_tokens, win_positions, cache, gates=gates, vocab=vocab)
        guess = vocab_reduce.argmax(out.logits)
        if vocab is not None:
            guess = jnp.take_along_axis(vocab, guess, axis=1)
        agree = (guess == want) & valid
        return jnp.sum(agree) / jnp.sum(valid)

    return lambda gates: float(score(jnp.asarray(gates)))


def search_skip_set(
    model, params, tokens: Sequence[Sequence[int]], *, num_draft_tokens: int, verify_cost: float = 1.0,
    budget: int = DEFAULT_BUDGET, window: int = CONTEXT_WINDOW, draft_vocab: int | None = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> SearchResult:
    """The skip set of best expected speedup on `tokens` (the prompts, or the text so far), scoring at most
    `budget` sets. verify_cost: c, the cost of verifying K + 1 tokens relative to one (cost_model.py);
    draft_vocab: N ids per row from the context, or None for the whole vocabulary."""
    if budget < 1:
        raise InputError(f"the skip-layer search budget must be >= 1, got {budget}")
    n = model.config.num_layers
    full = sublayer_costs(model, params)
    draft = sublayer_costs(model, params, draft_vocab)
    costs = full[0]
    score = agreement_scorer(model, params, tokens, window, draft_vocab)
    seen: dict[tuple[tuple[int, int], ...], float] = {}

    def objective(skipped: frozenset) -> tuple[float, float, float]:
        key = tuple(sorted(skipped))
        if key not in seen:
            seen[key] = score(_skip_set(skipped).gates(n))
        alpha = seen[key]
        r = _weight_share(draft, full, _skip_set(skipped))
        return expected_tokens(alpha, num_draft_tokens) / (num_draft_tokens * r + verify_cost), alpha, r

    candidates = [(kind, layer) for layer in range(1, n - 1) for kind in (0, 1)]
    best, (best_value, _, _) = frozenset(), objective(frozenset())
    # Sub-layers alone, cheapest to lose first (by agreement, then by the weights skipping saves).
    alone = {}
    for c in candidates:
        if len(seen) >= budget:
            break
        alone[c] = objective(frozenset([c]))[1]
    order = sorted(alone, key=lambda c: (-alone[c], -costs[c]))
    progress(f"skip-layer search: {len(alone)} sub-layers scored alone")
    for c in order:
        if len(seen) >= budget:
            break
        value = objective(best | {c})[0]
        if value > best_value:
            best, best_value = best | {c}, value
    # Swaps: one skipped sub-layer for one that runs, kept when better, while budget remains.
    rng = np.random.default_rng(SWAP_SEED)
    tries = 0
    while len(seen) < budget and best and len(best) < len(candidates) and tries < 4 * budget:
        tries += 1
        out = sorted(best)[rng.integers(len(best))]
        rest = [c for c in candidates if c not in best]
        new = (best - {out}) | {rest[rng.integers(len(rest))]}
        value = objective(new)[0]
        if value > best_value:
            best, best_value = new, value
    value, alpha, r = objective(best)
    skip = _skip_set(best)
    progress(f"skip-layer search: skip {skip or 'nothing'} (agreement {alpha:.2f}, draft cost {r:.2f} of a "
             f"forward, expected {value:.2f}x; {len(seen)} sets scored)")
    return SearchResult(skip, float(alpha), float(r), float(value), len(seen))


def _skip_set(skipped) -> SkipSet:
    """The SkipSet of (kind, layer) pairs, kind 0 for attention and 1 for the MLP."""
    return SkipSet(tuple(layer for kind, layer in skipped if kind == 0), tuple(layer for kind, layer in skipped if kind == 1))


def _model_identity(model) -> dict:
    c = model.config
    return dict(architecture=c.architecture, layers=c.num_layers, hidden_size=c.hidden_size, vocab_size=c.vocab_size)


def save_skip_set(path: str | Path, model, skip: SkipSet, result: SearchResult | None = None) -> None:
    """The set as JSON, with the model it was chosen for (and how it scored, when searched)."""
    record = dict(model=_model_identity(model), skip=str(skip))
    if result is not None:
        record.update(agreement=result.agreement, draft_cost=result.draft_cost,
                      expected_speedup=result.expected_speedup, evaluations=result.evaluations)
    with atomic_file(Path(path)) as f:
        f.write(json.dumps(record, indent=1) + "\n")


def load_skip_set(path: str | Path, model) -> SkipSet:
    try:
        record = json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read skip set ({e.strerror})") from None
    except json.JSONDecodeError:
        raise InputError(f"{path}: not a skip set file (not JSON)") from None
    if not isinstance(record, dict) or "skip" not in record or "model" not in record:
        raise InputError(f"{path}: not a skip set file (needs 'model' and 'skip')")
    mine = _model_identity(model)
    if record["model"] != mine:
        raise InputError(f"{path}: the skip set was chosen for {record['model']}, not this model ({mine})")
    try:
        return SkipSet.parse(record["skip"], model.config.num_layers)
    except SkipSetError as e:
        raise InputError(f"{path}: {e}") from None
