"""Decoding methods by name: each is a drafter (and its parameters) for the one decode loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.drafters import Autoregressive
from jaxspec.drafters.draft_model import AdaptiveDraft, DraftModel
from jaxspec.drafters.dynamic_exit import DynamicExit
from jaxspec.drafters.eagle import Eagle
from jaxspec.drafters.early_exit import EarlyExit
from jaxspec.drafters.hydra import Hydra
from jaxspec.drafters.jacobi import Jacobi
from jaxspec.drafters.layer_skip import LayerSkip
from jaxspec.drafters.lookahead import Lookahead
from jaxspec.drafters.medusa import Medusa
from jaxspec.drafters.ngram_trie import NgramTrie
from jaxspec.drafters.prompt_lookup import PromptLookup, PromptLookupTree
from jaxspec.drafters.token_recycling import TokenRecycling
from jaxspec.errors import CheckpointError, InputError
from jaxspec.generate import bucket
from jaxspec.heads_io import LoadedHeads, check_adapter, check_target, target_fields
from jaxspec.sampling import SamplingConfig
from jaxspec.static_tree import expected_accepted, grow, node_accuracy, prior_accuracy
from models.early_exit import KANGAROO, ExitAdapter, ExitDraftModel
from models.layer_skip import SkippedModel, SkipSet, SkipSetError
from models.medusa import HeadsConfig

METHODS = (
    "autoregressive", "draft-model", "prompt-lookup", "medusa", "hydra", "eagle", "token-recycling", "ngram-trie", "jacobi",
    "speculative-jacobi", "lookahead", "layer-skip", "early-exit", "dynamic-exit",
)
# Methods that verify a tree: their node budget is --tree-size, not a draft length.
TREE_METHODS = ("medusa", "hydra", "eagle", "token-recycling", "ngram-trie")
# Trees whose `--tree-size auto` is sized per step: the largest of AUTO_TREE_SIZES is drafted, and the
# draft sizing verifies the prefix that pays (jaxspec/draft_sizing.py). Their drafting costs a few gathers
# whatever the size; the heads' grows with the tree, so they are sized once, by auto_tree_size.
STEP_SIZED_TREE_METHODS = ("token-recycling", "ngram-trie")
# Head methods draft with heads of their own kind (a heads directory's config.json "kind").
HEAD_METHODS = ("medusa", "hydra", "eagle")
# Jacobi's window is a chain of W guesses (--window), sized per step like other chains.
JACOBI_METHODS = ("jacobi", "speculative-jacobi")
# Lookahead's tree: (W + G) x (N - 1) nodes from --window, --levels and --pool-size.
LOOKAHEAD_DEFAULTS = dict(window=4, levels=3, pool_size=4)  # 16 nodes
# Tokens per target call of that default tree on Gemma 3 270M, greedy, the mean over the six real-text
# categories (bench/training_free.py): what `--window auto` expects lookahead to emit per verify.
LOOKAHEAD_TOKENS_PER_CALL = 1.44
DEFAULT_TREE_SIZE = 16
# Token recycling and the n-gram trie: successors kept per token (pair), and the deepest a tree grows.
SUCCESSOR_WIDTH = 8
TRAINING_FREE_DEPTH = 6
# How often the rank-r successor of an accepted token is the target's next token while decoding,
# measured by bench/rank_hits.py on Gemma 3 270M (greedy, six Spec-Bench-style categories) from
# trees of 1, 2, 4 and 8 depth-1 nodes. Replaying a prompt's own text instead underestimates rank 0 by
# a factor of 3 to 5: decoding follows the target's choices and repeats itself far more than human text.
RANK_ACCURACY = {
    "token-recycling": (0.55, 0.02, 0.015, 0.012, 0.01, 0.008, 0.006, 0.005),
    "ngram-trie": (0.55, 0.02, 0.015, 0.012, 0.01, 0.008, 0.006, 0.005),
}
# The same, the target sampling at temperature 0.7 (bench/rank_hits.py --temperature 0.7): a point-mass draft
# is accepted when the target's draw equals it, which the rank-0 successor is less often than it is the
# argmax. The sizing's prior at every temperature above 0 (each row's counts take over as it decodes).
SAMPLED_RANK_ACCURACY = {
    "token-recycling": (0.40, 0.028, 0.019, 0.019, 0.013, 0.013, 0.013, 0.013),
    "ngram-trie": (0.43, 0.044, 0.0014, 0.0014, 0.001, 0.001, 0.001, 0.001),
}
# tree_size="auto" picks among these the size of best expected speedup (auto_tree_size).
AUTO_TREE_SIZES = (1, 2, 4, 8, 16, 32)
# Fixed draft lengths, where the caller asks for the method's default without sizing (and for transformers).
DEFAULT_DRAFT_TOKENS = {
    "draft-model": 4, "prompt-lookup": 8, "jacobi": 4, "speculative-jacobi": 4, "layer-skip": 4, "early-exit": 4,
    "dynamic-exit": 4,
}
# num_draft_tokens="auto": the most drafts a step may verify; the cost model picks fewer per row and step.
AUTO = "auto"
AUTO_MAX_DRAFTS = {
    "draft-model": 8, "prompt-lookup": 16, "jacobi": 8, "speculative-jacobi": 8, "layer-skip": 8, "early-exit": 8,
    "dynamic-exit": 8,
}
# Self-speculation drafts with the target's own layers: these methods need the target's params. Layer
# skipping's set is searched (--skip-layers); early exit's layer comes with its adapter or --exit-layer.
SELF_METHODS = ("layer-skip",)
EXIT_METHODS = ("early-exit",)
# Dynamic exit chooses among exits (--exit-layers) and its own draft length every step: it is sized by the
# target's measured verify cost inside the drafter, not by the loop's draft sizing.
DYNAMIC_EXIT_METHODS = ("dynamic-exit",)
# Ids per row a self-drafter drafts over, from its context (jaxspec/context_vocab.py): room for a long
# prompt's distinct tokens and what follows them.
SELF_DRAFT_VOCAB = 2048


def build_drafter(
    method: str,
    *,
    batch: int,
    sampling: SamplingConfig,
    target_vocab: int,
    target_encoder_decoder: bool = False,
    num_draft_tokens: int | None = None,
    draft_model: Any = None,
    draft_params: Any = None,
    adaptive: AdaptiveDraft | None = None,
    ngram: int = 3,
    lookup_branches: int = 1,
    reference_ids: Sequence[int] | None = None,
    heads: LoadedHeads | None = None,
    target: tuple[Any, Any] | None = None,
    tree_size: int | None = None,
    accuracy: Sequence[Sequence[float]] | None = None,
    successors: tuple[Any, Any] | None = None,
    levels: int = LOOKAHEAD_DEFAULTS["levels"],
    pool_size: int = LOOKAHEAD_DEFAULTS["pool_size"],
    skip: SkipSet | None = None,
    draft_vocab: int | None = None,
    exit_layer: int | None = None,
    exit_layers: Sequence[int] | None = None,
):
    """Returns (drafter, drafter_params) for generate(). A head method needs `heads` (jaxspec.heads_io) and
    `target` = (model, params): the heads project through the target's output embedding. Token recycling
    grows its tree from `accuracy` (rank_accuracy(method) without) and starts from the
    `successors` table a former call left (TokenRecycling.carry), or from nothing. Jacobi's window and
    lookahead's are num_draft_tokens; lookahead's n-gram size is `levels`, its pool `pool_size`. Layer
    skipping drafts with `target` through `skip` (resolve_skip_set) and takes the target's params as its own;
    `draft_vocab` = N: each row drafts over N ids of its context (None or >= V: the whole vocabulary). Early
    exit drafts with `target` through the exit adapter `heads` (jaxspec.heads_io), or without one through an
    untrained adapter after `exit_layer` layers (plain early exit), on params {"target", "adapter"}. Dynamic
    exit drafts through whichever of `exit_layers` (None: default_exit_layers) pays best each step."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method == "autoregressive":
        return Autoregressive(), None
    if method in TREE_METHODS:
        if method in HEAD_METHODS and heads is None:
            raise InputError(f"method {method} needs draft heads (--heads DIR, made by jaxspec-train heads)")
        size = DEFAULT_TREE_SIZE if tree_size is None else tree_size
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise InputError(f"tree size must be >= 1, got {size}")
        if method == "token-recycling":
            return _recycling_drafter(target_vocab, int(size), accuracy, successors)
        if method == "ngram-trie":
            return NgramTrie(grow(accuracy or rank_accuracy(method), int(size)), width=SUCCESSOR_WIDTH), None
        return _head_drafter(method, heads, target, int(size))
    if method == "lookahead":
        return _lookahead_drafter(LOOKAHEAD_DEFAULTS["window"] if num_draft_tokens is None else num_draft_tokens,
                                  levels, pool_size), None
    k = DEFAULT_DRAFT_TOKENS[method] if num_draft_tokens is None else num_draft_tokens
    if int(k) != k or k < 1:
        knob = "window" if method in JACOBI_METHODS else "num-draft-tokens"
        raise InputError(f"{knob} must be >= 1, got {k}")
    if method in JACOBI_METHODS:
        return Jacobi(int(k), sampling, sampled=method == "speculative-jacobi", vocab=target_vocab), None
    if method in SELF_METHODS:
        return _self_drafter(target, skip, int(k), sampling, draft_vocab)
    if method in EXIT_METHODS:
        return _exit_drafter(target, heads, exit_layer, int(k), sampling, draft_vocab)
    if method in DYNAMIC_EXIT_METHODS:
        return _dynamic_exit_drafter(target, exit_layers, int(k), sampling, draft_vocab)
    if method == "draft-model":
        if draft_model is None:
            raise InputError("method draft-model needs a draft model (--draft PATH)")
        if draft_model.is_encoder_decoder != target_encoder_decoder:
            kinds = {True: "an encoder-decoder", False: "a decoder-only"}
            raise InputError(
                f"the draft is {kinds[draft_model.is_encoder_decoder]} model but the target is "
                f"{kinds[target_encoder_decoder]} one: both must be of one kind"
            )
        if draft_model.vocab_size != target_vocab:
            raise InputError(
                f"draft vocabulary ({draft_model.vocab_size}) differs from the target's ({target_vocab})"
            )
        return DraftModel(draft_model, int(k), sampling, adaptive), draft_params
    if int(ngram) != ngram or ngram < 1:
        raise InputError(f"ngram must be >= 1, got {ngram}")
    reference = None
    if reference_ids:
        ids = np.asarray(list(reference_ids), np.int32)
        if ids.min() < 0 or ids.max() >= target_vocab:
            raise InputError("reference has token ids outside the vocabulary")
        # Padded to a bucket so a new reference of a known bucket does not recompile.
        padded = np.zeros(bucket(len(ids)), np.int32)
        padded[: len(ids)] = ids
        reference = (jnp.asarray(np.tile(padded, (batch, 1))), jnp.full((batch,), len(ids), jnp.int32))
    if int(lookup_branches) != lookup_branches or lookup_branches < 1:
        raise InputError(f"lookup branches must be >= 1, got {lookup_branches}")
    if lookup_branches > 1:
        return PromptLookupTree(int(lookup_branches), int(k), int(ngram)), reference
    return PromptLookup(int(k), int(ngram)), reference


def rank_accuracy(method: str, sampled: bool = False) -> tuple[tuple[float, ...], ...]:
    """accuracy[d][r] for a training-free tree method: its RANK_ACCURACY (SAMPLED_RANK_ACCURACY) at every depth."""
    return ((SAMPLED_RANK_ACCURACY if sampled else RANK_ACCURACY)[method],) * TRAINING_FREE_DEPTH


def _recycling_drafter(vocab: int, tree_size: int, accuracy, successors):
    drafter = TokenRecycling(grow(accuracy or rank_accuracy("token-recycling"), tree_size), vocab, SUCCESSOR_WIDTH)
    if successors is not None:
        table, known = successors
        if tuple(table.shape) != (vocab, SUCCESSOR_WIDTH) or tuple(known.shape) != (vocab,):
            raise InputError(
                f"the successor table is {tuple(table.shape)}, but this target needs ({vocab}, {SUCCESSOR_WIDTH})"
            )
    return drafter, successors


def _lookahead_drafter(window, levels, pool_size) -> Lookahead:
    for name, value, least in (("window", window, 1), ("levels", levels, 2), ("pool-size", pool_size, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise InputError(f"lookahead: {name} must be an integer >= {least}, got {value}")
    if levels > window:
        raise InputError(f"lookahead: levels ({levels}) must not exceed the window ({window}): each level holds "
                         "one Jacobi iterate of the window's columns")
    return Lookahead(int(window), int(levels), int(pool_size))


def _decoder_target(method: str, target):
    """(model, params) of a target a self-drafter can run: decoder-only."""
    if target is None:
        raise InputError(f"method {method} needs the target (model, params)")
    model, params = target
    if model.is_encoder_decoder or not hasattr(model.config, "num_layers"):
        raise InputError(f"{method} drafts with the target's own decoder layers: it needs a decoder-only model")
    return model, params


def _draft_subset(model, draft_vocab: int | None) -> int | None:
    """A self-drafter's ids per row: None for the whole vocabulary."""
    if draft_vocab is not None and (int(draft_vocab) != draft_vocab or draft_vocab < 1):
        raise InputError(f"draft vocabulary must be >= 1 ids, got {draft_vocab}")
    return None if draft_vocab is None or draft_vocab >= model.vocab_size else int(draft_vocab)


def _self_drafter(target, skip: SkipSet | None, k: int, sampling: SamplingConfig, draft_vocab: int | None):
    model, params = _decoder_target("layer-skip", target)
    if skip is None:
        raise InputError("method layer-skip needs a skip set (--skip-layers)")
    try:
        skip.check(model.config.num_layers)
    except SkipSetError as e:
        raise InputError(str(e)) from None
    return LayerSkip(SkippedModel(model, skip), k, sampling, draft_vocab=_draft_subset(model, draft_vocab)), params


def _exit_drafter(target, heads: LoadedHeads | None, exit_layer: int | None, k: int, sampling, draft_vocab):
    model, params = _decoder_target("early-exit", target)
    if heads is None:
        if exit_layer is None:
            raise InputError("method early-exit needs an exit adapter (--adapter DIR) or an exit layer (--exit-layer E)")
        adapter = untrained_adapter(model, exit_layer)
        adapter_params = adapter.init_params(jax.random.key(0))
    else:
        expect_heads_for("early-exit", heads)
        adapter, adapter_params = heads.heads, heads.params
        if exit_layer is not None and exit_layer != adapter.config.exit_layer:
            raise InputError(
                f"{heads.source}: the adapter follows layer {adapter.config.exit_layer}, not --exit-layer {exit_layer}"
            )
    drafter = EarlyExit(ExitDraftModel(model, adapter), k, sampling, draft_vocab=_draft_subset(model, draft_vocab))
    return drafter, {"target": params, "adapter": adapter_params}


def default_exit_layers(num_layers: int) -> tuple[int, ...]:
    """Dynamic exit's candidates: the quarter, half and three-quarter depths (those in [1, L))."""
    return tuple(sorted({min(max(round(num_layers * f), 1), num_layers - 1) for f in (0.25, 0.5, 0.75)}))


def _dynamic_exit_drafter(target, exit_layers, k: int, sampling: SamplingConfig, draft_vocab: int | None):
    from jaxspec.skip_search import draft_cost

    model, params = _decoder_target("dynamic-exit", target)
    n = model.config.num_layers
    if n < 2:
        raise InputError("dynamic-exit needs a model of at least 2 layers to exit early from")
    exits = default_exit_layers(n) if exit_layers is None else tuple(sorted(set(exit_layers)))
    try:
        skips = [SkipSet.exit_after(e, n) for e in exits]
    except SkipSetError as e:
        raise InputError(str(e)) from None
    subset = _draft_subset(model, draft_vocab)
    drafters = tuple(LayerSkip(SkippedModel(model, skip), k, sampling, draft_vocab=subset) for skip in skips)
    costs = tuple(draft_cost(model, params, skip, subset) for skip in skips)
    return DynamicExit(drafters, exits, costs), params


def prompt_agreement(model, params, prompts, exits, progress=lambda msg: None):
    """Per exit, how often its argmax over the whole vocabulary agrees with the full model's over the
    prompts' last tokens (teacher-forced, skip_search.agreement_scorer); None where no prompt has 2 tokens.
    Scored over the whole vocabulary, not the context vocabulary drafting uses: the whole vocabulary holds
    more wrong guesses, so this errs low."""
    from jaxspec.skip_search import agreement_scorer

    if not any(len(p) >= 2 for p in prompts):
        return None
    n = model.config.num_layers
    score = agreement_scorer(model, params, prompts)
    agreement = tuple(score(SkipSet.exit_after(e, n).gates(n)) for e in exits)
    progress("dynamic exit: agreement on the prompts " + ", ".join(f"exit:{e} {a:.2f}" for e, a in zip(exits, agreement)))
    return agreement


def untrained_adapter(model, exit_layer: int) -> ExitAdapter:
    """An adapter whose output projection is zero: drafting through it is plain early exit after
    `exit_layer` layers. The trainer starts from it (train/early_exit.py)."""
    config = HeadsConfig(
        kind=KANGAROO, num_heads=1, num_layers=1, exit_layer=exit_layer,
        attention_heads=adapter_heads(model.config.hidden_size), **target_fields(model),
    )
    try:
        check_adapter(config, "early-exit")
    except CheckpointError as e:
        raise InputError(str(e)) from None
    return ExitAdapter(config)


def adapter_heads(hidden_size: int) -> int:
    """The adapter's attention heads: 64-wide where the hidden size allows, else one."""
    return hidden_size // 64 if hidden_size % 64 == 0 and hidden_size >= 64 else 1


def resolve_skip_set(
    spec: str, model, params, prompts, *, num_draft_tokens: int, batch: int, budget: int,
    draft_vocab: int | None = None, progress=lambda msg: None,
):
    """(SkipSet, SearchResult or None) from --skip-layers: "auto" searches on the prompts (verifying K + 1
    tokens at the target's measured cost), a path ending in .json is a saved set, anything else a spec
    such as "a3,m3" or "exit:6"."""
    from jaxspec.skip_search import load_skip_set, search_skip_set

    if model.is_encoder_decoder or not hasattr(model.config, "num_layers"):
        raise InputError("layer-skip drafts with the target's own decoder layers: it needs a decoder-only model")
    if spec == AUTO:
        width = num_draft_tokens + 1
        verify_cost = _tree_costs(model, params, batch, progress, width)[width]
        result = search_skip_set(model, params, prompts, num_draft_tokens=num_draft_tokens, verify_cost=verify_cost,
                                 budget=budget, draft_vocab=draft_vocab, progress=progress)
        return result.skip, result
    if spec.endswith(".json"):
        return load_skip_set(spec, model), None
    try:
        return SkipSet.parse(spec, model.config.num_layers), None
    except SkipSetError as e:
        raise InputError(str(e)) from None


def _head_drafter(method: str, heads: LoadedHeads, target, tree_size: int):
    model, params = target
    check_target(heads.heads.config, model, heads.source)
    expect_heads_for(method, heads)
    table = model.output_embedding(params)
    rows = table if heads.draft_ids is None else table[heads.draft_ids]
    if method == "eagle":  # a dynamic tree, as deep as the drafter was trained to draft
        depth = min(heads.heads.config.num_heads, tree_size)
        return Eagle(heads.heads, tree_size, depth), (heads.params, rows, table, heads.draft_ids)
    tree = grow(head_accuracy(heads), int(tree_size))
    if method == "hydra":
        return Hydra(heads.heads, tree), (heads.params, rows, table, heads.draft_ids)
    return Medusa(heads.heads, tree), (heads.params, rows, heads.draft_ids)


def expect_heads_for(method: str, heads: LoadedHeads) -> None:
    """Each head method drafts with heads of its own kind, early exit with an exit adapter; all load as heads
    directories."""
    if method == "early-exit" and not isinstance(heads.heads, ExitAdapter):
        raise InputError(f"{heads.source}: not an exit adapter ({heads.heads.config.kind} heads)")
    if method in HEAD_METHODS and isinstance(heads.heads, ExitAdapter):
        raise InputError(f"{heads.source}: an exit adapter, not draft heads (use it with --method early-exit --adapter)")
    if method in HEAD_METHODS and heads.heads.config.kind != method:
        raise InputError(f"{heads.source}: {heads.heads.config.kind} heads, not {method} heads (use --method {heads.heads.config.kind})")


def head_accuracy(heads: LoadedHeads):
    """accuracy[k][r] measured after training, or the prior for heads that never were measured."""
    config = heads.heads.config
    return config.accuracy or prior_accuracy(config.num_heads)


def best_tree_size(accuracy, cost: dict[int, float], drafting) -> tuple[int, float]:
    """(n, expected speedup): the n of AUTO_TREE_SIZES maximising (1 + E[accepted](n)) / (cost[n + 1] +
    drafting(n)), E from accuracy[k][r]; n = 0 (plain decoding, speedup 1) when none beats 1. `drafting`:
    a step's drafting cost, in one-token forwards, for an n-node tree (measured_drafting_cost; a number: the
    same for every n)."""
    drafting_cost = drafting if callable(drafting) else (lambda n: drafting)
    speedup = {
        n: (1 + expected_accepted(grow(accuracy, n), accuracy)) / (cost[n + 1] + drafting_cost(n))
        for n in AUTO_TREE_SIZES
    }
    best = max(speedup, key=speedup.get)
    return (best, speedup[best]) if speedup[best] > 1.0 else (0, speedup[best])


def measured_drafting_cost(method: str, model, params, batch: int, progress=lambda msg: None, **build):
    """A tree method's drafting step (propose, then update) for an n-node tree, for each n of AUTO_TREE_SIZES,
    in one-token target forwards at this batch size: timed (jaxspec/cost_model.py, once, cached on disk), not
    estimated from the bytes read, since small head calls are bound by latency on a CPU. `build`: what
    build_drafter needs besides the size (the heads)."""
    from jaxspec.cost_model import drafting_costs

    drafters = {
        n: build_drafter(method, batch=batch, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                         target=(model, params), tree_size=n, **build)
        for n in AUTO_TREE_SIZES
    }
    return drafting_costs(model, params, drafters, batch_size=batch, progress=progress).__getitem__


def _tree_costs(model, params, batch: int, progress, *extra_widths: int) -> dict[int, float]:
    """The target's measured c(w) at this batch size for the widths tree sizing reads (one cached curve)."""
    from jaxspec.cost_model import cost_curve

    widths = sorted({1, *(n + 1 for n in AUTO_TREE_SIZES), *extra_widths})
    return cost_curve(model, params, batch_size=batch, widths=widths, progress=progress).sizing_costs()


def auto_lookahead(model, params, batch: int, drafter: Lookahead, progress=lambda msg: None) -> bool:
    """Whether lookahead's tree is expected to pay here: LOOKAHEAD_TOKENS_PER_CALL over the measured cost
    of verifying its nodes (its drafting is a few gathers and W pool writes: nothing next to a forward)."""
    width = drafter.num_draft_tokens + 1
    speedup = LOOKAHEAD_TOKENS_PER_CALL / _tree_costs(model, params, batch, progress, width)[width]
    if speedup <= 1.0:
        progress(f"lookahead's {width - 1}-node tree is not expected to pay here ({speedup:.2f}x): decoding plainly")
        return False
    progress(f"lookahead's {width - 1}-node tree (expected {speedup:.2f}x from its measured tokens per call)")
    return True


def auto_tree_size(accuracy, drafting, model, params, batch: int, what: str, progress=lambda msg: None) -> int:
    """best_tree_size with the target's measured forward cost at this batch size; `what` names the
    accuracies' source in the progress line."""
    n, speedup = best_tree_size(accuracy, _tree_costs(model, params, batch, progress), drafting)
    if n == 0:
        progress(f"no draft tree is expected to pay here (at best {speedup:.2f}x): decoding plainly")
    else:
        progress(f"tree of {n} nodes (expected {speedup:.2f}x from {what} and the forward cost)")
    return n


def drafts_to_build(method: str, num_draft_tokens: int | str | None, tree: bool = False) -> int | None:
    """K for build_drafter: "auto" builds the method's largest chain (the sizing picks fewer per step), or
    prompt lookup's tree's default depth (a tree drawn anew each step is not sized per step); an int is
    taken as given."""
    if num_draft_tokens == AUTO:
        return DEFAULT_DRAFT_TOKENS.get(method) if tree else AUTO_MAX_DRAFTS.get(method)
    return num_draft_tokens


def auto_sizing(
    method: str, num_draft_tokens: int | str | None, drafter, model, params, batch: int, *,
    draft_model=None, draft_params=None, sampled: bool = False, progress=lambda msg: None,
):
    """The cost-model sizing for num_draft_tokens="auto", or for tree_size="auto" of a tree sized per step
    (STEP_SIZED_TREE_METHODS): the target's measured forward cost per width at this batch size, and the
    draft model's step cost; such a tree's nodes start from its rank hit rates, greedy or `sampled` (the
    target samples). None otherwise: plain decoding, and trees verified whole."""
    tree = isinstance(drafter, (PromptLookupTree, Lookahead))
    step_sized = method in STEP_SIZED_TREE_METHODS
    if num_draft_tokens != AUTO or method == "autoregressive" or (method in TREE_METHODS and not step_sized) or tree:
        return None
    from jaxspec.cost_model import draft_sizing

    sizing = draft_sizing(
        model, params, batch_size=batch, num_draft_tokens=drafter.num_draft_tokens,
        draft_model=draft_model if method == "draft-model" else None, draft_params=draft_params, progress=progress,
    )
    if step_sized:  # each node starts from the hit rate of its rank, greedy or `sampled`
        return dataclasses.replace(sizing, node_prior=node_accuracy(drafter.tree, rank_accuracy(method, sampled)))
    if method in SELF_METHODS or method in EXIT_METHODS:
        # A self-draft's token costs the share of the target's weights it reads (its skip set, its draft
        # vocabulary's rows of the head): the same estimate its skip set was chosen by; an exit adapter's
        # weights are added to it.
        from jaxspec.skip_search import draft_cost

        if method in EXIT_METHODS:
            cost = exit_draft_cost(model, params, drafter.model.adapter, drafter.draft_vocab)
        else:
            cost = draft_cost(model, params, drafter.model.skip, drafter.draft_vocab)
        sizing = dataclasses.replace(sizing, draft_cost=cost)
    return sizing


def exit_draft_cost(model, params, adapter: ExitAdapter, draft_vocab: int | None) -> float:
    """An early-exit draft's weight share: the first E layers, the head's rows it scores, the adapter."""
    from jaxspec.skip_search import draft_cost

    skip = SkipSet.exit_after(adapter.config.exit_layer, model.config.num_layers)
    adapter_size = sum(x.size for x in jax.tree_util.tree_leaves(jax.eval_shape(adapter.init_params, jax.random.key(0))))
    return draft_cost(model, params, skip, draft_vocab) + adapter_size / sum(x.size for x in jax.tree_util.tree_leaves(params))
