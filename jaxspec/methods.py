"""Decoding methods by name: each is a drafter (and its parameters) for the one decode loop."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from jaxspec.drafters import Autoregressive
from jaxspec.drafters.draft_model import AdaptiveDraft, DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.errors import InputError
from jaxspec.generate import bucket
from jaxspec.sampling import SamplingConfig

METHODS = ("autoregressive", "draft-model", "prompt-lookup")
DEFAULT_DRAFT_TOKENS = {"draft-model": 4, "prompt-lookup": 8}


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
    reference_ids: Sequence[int] | None = None,
):
    """Returns (drafter, drafter_params) for generate()."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method == "autoregressive":
        return Autoregressive(), None
    k = DEFAULT_DRAFT_TOKENS[method] if num_draft_tokens is None else num_draft_tokens
    if int(k) != k or k < 1:
        raise InputError(f"num-draft-tokens must be >= 1, got {k}")
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
    return PromptLookup(int(k), int(ngram)), reference
