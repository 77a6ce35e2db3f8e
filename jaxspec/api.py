"""The Python API a notebook reaches for first: loaded models and text in, text out, any method by name.

    target = jaxspec.load("path/to/model")
    out = jaxspec.generate(target, "def fib(n):", method="prompt-lookup", max_new_tokens=64)
    print(out.text, out.tokens_per_call)

`generate` encodes strings with the target's tokenizer (or takes token ids), builds the method's drafter
through the same prepare_method as the `jaxspec` command (the same defaults, the same cost-model sizing),
shards over a mesh when asked, and decodes the batch in one compiled program. The low-level
jaxspec.generate_ids(model, params, ids, drafter=...) stays for callers that build their drafters
themselves.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jaxspec import chat_template
from jaxspec.errors import InputError
from jaxspec.generate import Generation, check_request
from jaxspec.generate import generate as generate_ids
from jaxspec.loading import LoadedModel, load, mesh_plan
from jaxspec.method_setup import MethodOptions, prepare_method
from jaxspec.methods import METHODS
from jaxspec.sampling import SamplingConfig
from jaxspec.sharding import ShardingPlan


@dataclasses.dataclass
class Completion(Generation):
    text: str | None = None  # the new tokens decoded; None for a model without a tokenizer

    @property
    def tokens_per_call(self) -> float:
        return self.new_tokens / max(self.target_calls, 1)


def _stderr(msg: str) -> None:
    print(f"jaxspec: {msg}", file=sys.stderr, flush=True)


def _check_method(method: str, draft) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if draft is not None and method != "draft-model":
        raise InputError(f"a draft model is for method draft-model, not {method}")


def decode_ids(
    target: LoadedModel, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, method: str = "autoregressive",
    draft: LoadedModel | None = None, options: MethodOptions = MethodOptions(), sampling: SamplingConfig = SamplingConfig(),
    seed: int | Sequence[int] = 0, mesh: str | ShardingPlan | None = None, progress: Callable[[str], None] = _stderr,
    stop: Sequence[str] = (),
) -> list[Generation]:
    """The batch of token-id prompts decoded by `method`: what `jaxspec generate` and generate() run. A row
    also stops once its output ends with the bytes of a text in `stop` (byte-level models)."""
    _check_method(method, draft)
    stop_sequences = _stop_sequences(target, stop)
    model = target.model
    check_request(model, prompt_ids, max_new_tokens, model.max_positions)  # before any cost measuring
    plan = mesh_plan(model, mesh)
    if plan is not None:
        # The target goes on the mesh first (nothing moves where load(..., mesh=) placed it already), so what
        # a drafter takes from it (self-speculation's layers, the heads' embedding) is already in place.
        target = dataclasses.replace(target, params=plan.shard_params(target.params))
        if draft is not None:
            draft = dataclasses.replace(draft, params=plan.for_model(draft.model).shard_params(draft.params))
        for note in plan.cache_fallbacks(len(prompt_ids)):
            progress(f"KV cache layout: {note}")
    prepared = prepare_method(method, target, len(prompt_ids), sampling, options, draft=draft, prompts=prompt_ids,
                              progress=progress)
    drafter_params = prepared.drafter_params if plan is None else plan.place(prepared.drafter_params)
    return generate_ids(
        model, target.params, prompt_ids, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
        stop_ids=target.eos_ids, stop_sequences=stop_sequences, drafter=prepared.drafter, drafter_params=drafter_params,
        max_positions=model.max_positions, plan=plan, sizing=prepared.sizing,
        drafter_state_to=prepared.drafter_state_to,
    )


def _stop_sequences(target: LoadedModel, stop: Sequence[str]) -> list[list[int]]:
    """The byte sequences of stop texts. Only a byte-level model's ids spell text one way: a tokenizer may
    spell a stop text with other tokens than its own encoding, so token-sequence stops would miss it."""
    if not stop:
        return []
    if not getattr(target.model, "byte_level", False):
        raise InputError("stop texts need a byte-level model (HAT); a tokenizer model stops at its end-of-text ids")
    return [target.tokenizer.encode(text) for text in stop]


def _prompt_ids(target: LoadedModel, prompts) -> tuple[list[list[int]], bool]:
    """(token ids per prompt, whether one prompt was given rather than a list) from a string, a list of
    strings, a list of ids or a list of id lists."""
    single = isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and len(prompts) > 0 and all(isinstance(t, int) for t in prompts)
    )
    items = [prompts] if single else list(prompts)
    ids = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if target.tokenizer is None:
                raise InputError(f"{target.source}: this model has no tokenizer.json; give token ids")
            ids.append(target.tokenizer.encode(item))
        elif isinstance(item, Sequence) and all(isinstance(t, int) for t in item):
            ids.append(list(item))
        else:
            raise InputError(f"prompt {i} is neither a string nor a list of token ids")
    return ids, single


def generate(
    target: LoadedModel,
    prompts: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
    *,
    method: str = "autoregressive",
    draft: LoadedModel | str | Path | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    seed: int | Sequence[int] = 0,
    mesh: str | ShardingPlan | None = None,
    stop: Sequence[str] = (),
    verbose: bool = True,
    **method_options: Any,
) -> Completion | list[Completion]:
    """Decodes `prompts` with `method` (jaxspec.methods.METHODS) and returns a Completion per prompt, or
    one Completion for one prompt (a string or a list of ids).

    `target` and `draft` come from jaxspec.load (a draft path is loaded in the target's dtype).
    temperature 0 is greedy; top_k, top_p and min_p filter sampling as in transformers. Row i samples
    with seed + i (or its own seed from a list) and never depends on the other rows. `mesh`
    ("data=2,tensor=4" or a ShardingPlan) shards the target over the devices. A byte-level model (HAT) also
    stops once a row's output ends with a text of `stop` (its bytes, kept). `method_options` are the
    method's knobs, named as jaxspec.method_setup.MethodOptions names them (num_draft_tokens=4,
    tree_size=8, heads="run/heads", ...); each defaults as the `jaxspec` command's flag does, drafts
    sized from the target's measured forward cost. `verbose` prints progress (cost measuring, sizing
    decisions) to stderr.
    """
    ids, single = _prompt_ids(target, prompts)
    _check_method(method, draft)
    if isinstance(draft, (str, Path)):
        draft = load(draft, target.model.dtype)
    results = decode_ids(
        target, ids, max_new_tokens=max_new_tokens, method=method, draft=draft,
        options=MethodOptions.from_keywords(method_options), sampling=SamplingConfig(temperature, top_k, top_p, min_p),
        seed=seed, mesh=mesh, progress=_stderr if verbose else (lambda msg: None), stop=stop,
    )
    decode = target.tokenizer.decode if target.tokenizer is not None else (lambda ids: None)
    completions = [Completion(**dataclasses.asdict(r), text=decode(r.output_ids)) for r in results]
    return completions[0] if single else completions


def apply_chat_template(
    target: LoadedModel, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
    tokenize: bool = True, **variables: Any,
) -> list[int] | str:
    """The chat `messages` ([{"role": "user", "content": "..."}, ...]) through the target's chat template,
    as token ids ready for generate() (tokenize=True) or as text; like transformers' method of the same name.
    `variables` reach the template (tools=..., enable_thinking=...)."""
    source, config = chat_template.find_template(target.side_files)
    if source is None:
        raise InputError(f"{target.source}: the tokenizer has no chat template (tokenizer_config.json or chat_template.jinja)")
    text = chat_template.render(source, config, messages, add_generation_prompt=add_generation_prompt, **variables)
    if not tokenize:
        return text
    if target.tokenizer is None:
        raise InputError(f"{target.source}: this model has no tokenizer.json to encode the chat with")
    return target.tokenizer.encode(text, add_special_tokens=False)
