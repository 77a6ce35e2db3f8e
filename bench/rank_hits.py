"""How often a training-free method's rank-r successor is the target's next token, measured while decoding.

    python -m bench.rank_hits --method token-recycling|ngram-trie [--model DIR] [--prompts-per-category 2] \
        [--temperature 0.7]

Decodes the first prompts of every category of bench/prompts/real/ greedily
(or sampled at --temperature) with trees of n = 1, 2, 4, 8 depth-1 nodes
(ranks 0 .. n-1 of the root's successors). A step then accepts one draft
exactly when one of them is the target's token (its argmax, or its draw by
the point-mass rule), so tokens per call minus one is the summed hit rate of
ranks below n, and differences give each rank's.
jaxspec.methods.RANK_ACCURACY and SAMPLED_RANK_ACCURACY come from this
script's output on the reference model, greedy and at temperature 0.7.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.real_text import CATEGORIES, PROMPTS
from jaxspec import reference_model
from jaxspec.generate import generate
from jaxspec.cli import resolve_prompts
from jaxspec.drafters.ngram_trie import NgramTrie
from jaxspec.drafters.token_recycling import TokenRecycling
from jaxspec.loading import load
from jaxspec.methods import SUCCESSOR_WIDTH
from jaxspec.sampling import SamplingConfig
from jaxspec.static_tree import StaticTree


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rank_hits", description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("token-recycling", "ngram-trie"), default="token-recycling")
    parser.add_argument("--model", default=None, help="default: the reference model (Gemma 3 270M)")
    parser.add_argument("--prompts-per-category", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args(argv)
    lm = load(args.model or reference_model.converted_dir())
    prompts = [
        p for c in CATEGORIES
        for p in resolve_prompts([("--prompts", str(PROMPTS / f"{c}.jsonl"))], lm.tokenizer)[: args.prompts_per_category]
    ]
    below = {0: 0.0}
    for n in (1, 2, 4, 8):
        star = StaticTree((-1,) * n, (1,) * n, tuple(range(n)))
        if args.method == "token-recycling":
            star = TokenRecycling(star, lm.model.vocab_size, SUCCESSOR_WIDTH)
        else:
            star = NgramTrie(star, width=SUCCESSOR_WIDTH)
        out = generate(lm.model, lm.params, prompts, max_new_tokens=args.max_new_tokens, stop_ids=lm.eos_ids,
                       drafter=star, sampling=SamplingConfig(temperature=args.temperature))
        below[n] = float(np.mean([g.new_tokens / g.target_calls - 1 for g in out]))
    sizes = sorted(below)
    per_rank = {f"ranks {a}..{b - 1}": (below[b] - below[a]) / (b - a) for a, b in zip(sizes, sizes[1:])}
    print(json.dumps({"hit rate of ranks below n": below, "per rank": per_rank}, indent=1))


if __name__ == "__main__":
    main()
