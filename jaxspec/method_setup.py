"""From a method's name and knobs to what generate() runs: the drafter, its params and the draft sizing.

The `jaxspec` command line, `jaxspec bench`, the benchmark scripts and the Python API
(jaxspec.generate) all decode through prepare_method, so a method behaves the same
wherever it is asked for: the same defaults, the same cost-model sizing, the same
fallback to plain decoding where no draft is expected to pay.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from jaxspec.decode_loop import check_drafting
from jaxspec.drafters.draft_model import AdaptiveDraft
from jaxspec.errors import InputError
from jaxspec.methods import (
    AUTO, AUTO_TREE_SIZES, DEFAULT_DRAFT_TOKENS, DYNAMIC_EXIT_METHODS, EXIT_METHODS, HEAD_METHODS, JACOBI_METHODS,
    LOOKAHEAD_DEFAULTS, SELF_DRAFT_VOCAB, SELF_METHODS, STEP_SIZED_TREE_METHODS, auto_lookahead, auto_sizing,
    auto_tree_size, build_drafter, drafts_to_build, expect_heads_for, head_accuracy, measured_drafting_cost,
    prompt_agreement, resolve_skip_set,
)
from jaxspec.skip_search import DEFAULT_BUDGET

# The adaptive-draft thresholds adaptive_draft=True (--adaptive-draft) turns on.
ADAPTIVE = AdaptiveDraft(min_confidence=0.3, max_reject_prob=0.8)


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Every method's knobs with their defaults; each is read only by the methods it names (the `jaxspec`
    flag of the same name, dashes for underscores, documents it)."""

    num_draft_tokens: int | str = AUTO
    adaptive_draft: bool = False
    ngram: int = 3
    lookup_branches: int = 1
    reference_text: str | None = None  # prompt lookup also copies from this text
    heads: str | None = None  # a heads directory (jaxspec-train heads)
    tree_size: int | str = AUTO
    successor_table: str | None = None  # token recycling: an .npz to start from and save to
    window: int | str = AUTO
    levels: int = LOOKAHEAD_DEFAULTS["levels"]
    pool_size: int = LOOKAHEAD_DEFAULTS["pool_size"]
    skip_layers: str = AUTO
    search_budget: int = DEFAULT_BUDGET
    save_skip_layers: str | None = None
    adapter: str | None = None  # an exit adapter directory (jaxspec-train early-exit)
    exit_layer: int | None = None
    exit_layers: str = AUTO  # dynamic exit's candidates: "4,9,14", or auto (default_exit_layers)
    draft_vocab: int = SELF_DRAFT_VOCAB

    @classmethod
    def from_args(cls, args) -> MethodOptions:
        """From parsed `jaxspec` flags; --reference FILE is read here."""
        fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        reference = getattr(args, "reference", None)
        if reference:
            try:
                fields["reference_text"] = Path(reference).read_text()
            except OSError as e:
                raise InputError(f"{reference}: cannot read reference ({e.strerror})") from None
        return cls(**fields)

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any]) -> MethodOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise InputError(f"unknown method option {unknown[0]!r} (choose from {', '.join(sorted(names))})")
        return cls(**keywords)


@dataclasses.dataclass(frozen=True)
class PreparedMethod:
    method: str  # what runs: "autoregressive" where the sizing found that no draft pays
    drafter: Any
    drafter_params: Any
    sizing: Any  # a DraftSizing, or None
    # Receives the drafter's final state (token recycling's table, saved to successor_table), or None.
    drafter_state_to: Callable[[Any], None] | None


def prepare_method(
    method: str, lm, batch: int, sampling, options: MethodOptions = MethodOptions(), *, draft=None,
    prompts=None, progress: Callable[[str], None] = lambda msg: None,
) -> PreparedMethod:
    """The drafter for `method` on the loaded target `lm` (jaxspec.loading.LoadedModel) at this batch size;
    `draft` is the loaded draft model of method draft-model; `prompts` (token ids) are what layer-skip's
    search reads. Sizing "auto" measures the target's forward cost (cached on disk) through `progress`."""
    check_drafting(lm.model, method != "autoregressive")
    o = options
    heads, tree_size, successors, plain = None, o.tree_size, None, False
    if method in HEAD_METHODS and o.heads:
        from jaxspec.heads_io import load_heads

        heads = load_heads(o.heads, lm.model)
        expect_heads_for(method, heads)
        if tree_size == AUTO:
            drafting = measured_drafting_cost(method, lm.model, lm.params, batch, progress, heads=heads)
            tree_size = auto_tree_size(head_accuracy(heads), drafting, lm.model, lm.params, batch,
                                       "the heads' accuracies", progress=progress)
            plain = tree_size == 0
    if method in STEP_SIZED_TREE_METHODS:
        from jaxspec.successor_table import load_successors

        if method == "token-recycling" and o.successor_table:
            successors = load_successors(o.successor_table)
        if tree_size == AUTO:  # the largest tree, sized per step by auto_sizing
            tree_size = AUTO_TREE_SIZES[-1]
            progress(f"trees of up to {tree_size} nodes, each step's prefix sized from the measured forward cost")
    if method in EXIT_METHODS and o.adapter:
        from jaxspec.heads_io import load_heads

        heads = load_heads(o.adapter, lm.model)
    skip = None
    if method in SELF_METHODS:
        skip, plain = _skip_set(o, method, lm, batch, prompts, progress)
    if plain:
        method = "autoregressive"
    reference = None
    if o.reference_text is not None:
        if lm.tokenizer is None:
            raise InputError("a reference text needs a model with a tokenizer.json")
        reference = lm.tokenizer.encode(o.reference_text)
    if method in JACOBI_METHODS:
        num_draft_tokens = drafts_to_build(method, o.window)
    elif method == "lookahead":
        num_draft_tokens = LOOKAHEAD_DEFAULTS["window"] if o.window == AUTO else o.window
    else:
        num_draft_tokens = drafts_to_build(method, o.num_draft_tokens, method == "prompt-lookup" and o.lookup_branches > 1)
    drafter, drafter_params = build_drafter(
        method,
        batch=batch,
        sampling=sampling,
        target_vocab=lm.model.vocab_size,
        target_encoder_decoder=lm.model.is_encoder_decoder,
        num_draft_tokens=num_draft_tokens,
        draft_model=draft.model if draft else None,
        draft_params=draft.params if draft else None,
        adaptive=ADAPTIVE if o.adaptive_draft else None,
        ngram=o.ngram,
        lookup_branches=o.lookup_branches,
        reference_ids=reference,
        heads=heads,
        target=(lm.model, lm.params),
        tree_size=tree_size,
        successors=successors,
        levels=o.levels,
        pool_size=o.pool_size,
        skip=skip,
        draft_vocab=_draft_vocab(o, lm),
        exit_layer=o.exit_layer,
        exit_layers=_exit_layers(o.exit_layers),
    )
    if method == "lookahead" and o.window == AUTO and not auto_lookahead(lm.model, lm.params, batch, drafter, progress):
        method = "autoregressive"
        drafter, drafter_params = build_drafter(method, batch=batch, sampling=sampling, target_vocab=lm.model.vocab_size)
    if method in DYNAMIC_EXIT_METHODS:
        # The drafter weighs each exit's drafts against the target's measured verify cost per width, starting
        # from each exit's agreement with the full model on the prompts.
        from jaxspec.cost_model import draft_sizing

        verify = draft_sizing(lm.model, lm.params, batch_size=batch, num_draft_tokens=drafter.num_draft_tokens,
                              progress=progress).verify_cost
        agreement = prompt_agreement(lm.model, lm.params, prompts or [], drafter.exits, progress)
        drafter = dataclasses.replace(drafter, verify_cost=verify, prior_acceptance=agreement)
        return PreparedMethod(method, drafter, drafter_params, None, None)
    size = o.window if method in JACOBI_METHODS else o.tree_size if method in STEP_SIZED_TREE_METHODS else o.num_draft_tokens
    sizing = auto_sizing(
        method, size, drafter, lm.model, lm.params, batch,
        draft_model=draft.model if draft else None, draft_params=draft.params if draft else None,
        sampled=not sampling.greedy, progress=progress,
    )
    return PreparedMethod(method, drafter, drafter_params, sizing, _successors_saver(o, drafter))


def _skip_set(o: MethodOptions, method, lm, batch, prompts, progress):
    """(layer-skip's skip set, whether to decode plainly instead), saved where asked."""
    from jaxspec.skip_search import save_skip_set

    if o.search_budget < 1:
        raise InputError(f"search budget must be >= 1, got {o.search_budget}")
    k = DEFAULT_DRAFT_TOKENS[method] if o.num_draft_tokens == AUTO else o.num_draft_tokens
    if k < 1:
        raise InputError(f"num-draft-tokens must be >= 1, got {k}")
    if o.draft_vocab < 0:
        raise InputError(f"draft vocabulary must be >= 0 ids, got {o.draft_vocab}")
    skip, found = resolve_skip_set(o.skip_layers, lm.model, lm.params, prompts or [], num_draft_tokens=k,
                                   batch=batch, budget=o.search_budget, draft_vocab=_draft_vocab(o, lm),
                                   progress=progress)
    if o.save_skip_layers:
        save_skip_set(o.save_skip_layers, lm.model, skip, found)
    if found is not None and found.expected_speedup <= 1.0:
        progress(f"no skip set is expected to pay here (at best {found.expected_speedup:.2f}x): decoding plainly")
        return skip, True
    return skip, False


def _exit_layers(spec: str) -> tuple[int, ...] | None:
    """--exit-layers: "4,9,14" as a tuple, auto as None (the method's defaults)."""
    if spec == AUTO:
        return None
    try:
        return tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise InputError(f"--exit-layers expects comma-separated layer counts or auto, got {spec!r}") from None


def _draft_vocab(o: MethodOptions, lm) -> int | None:
    """draft_vocab as build_drafter takes it: None for the whole vocabulary (0 asks for it)."""
    return None if o.draft_vocab == 0 or o.draft_vocab >= lm.model.vocab_size else o.draft_vocab


def _successors_saver(o: MethodOptions, drafter):
    """With successor_table, what saves token recycling's final table there (None otherwise)."""
    if not o.successor_table or not hasattr(drafter, "carry"):
        return None
    from jaxspec.successor_table import save_successors

    return lambda state: save_successors(o.successor_table, drafter.carry(state))
