"""transformers as the oracle: its greedy tokens, cut where its own choice is a coin toss."""

from __future__ import annotations

import torch

# Where transformers' top-2 logit gap is under this, greedy is a coin toss between implementations.
NEAR_TIE = 1e-4


def hf_greedy(hf, input_ids: list[int], max_new: int, eos_ids, **generate_kwargs) -> tuple[list[int], int]:
    """Greedy new tokens from hf.generate, and how many of them are safe to compare (no near-tie before).

    For a decoder-only model the output repeats the prompt; for an encoder-decoder one it begins with the
    decoder start token. Either way the new tokens are the last len(out.logits) of the sequence.
    """
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([input_ids]),
            attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=list(eos_ids),
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
            **generate_kwargs,
        )
    tokens = out.sequences[0, -len(out.logits) :].tolist()
    comparable = len(tokens)
    for i, step_logits in enumerate(out.logits):
        top2 = torch.topk(step_logits[0].double(), 2).values
        if float(top2[0] - top2[1]) < NEAR_TIE:
            comparable = i  # the token at i itself is a coin toss
            break
    return tokens, comparable


def assert_greedy_matches(hf, inputs: list[list[int]], results, max_new: int, eos_ids, **generate_kwargs) -> tuple[int, int]:
    """jaxspec's greedy Generations equal transformers' row by row, up to the first near-tie of each row.

    The comparison must have teeth: most tokens compared, and the text not degenerate. Returns the
    tokens compared and how many rows a near-tie cut short.
    """
    compared = near_ties = 0
    for ids, result in zip(inputs, results, strict=True):
        ref, n = hf_greedy(hf, ids, max_new, eos_ids, **generate_kwargs)
        assert result.output_ids[:n] == ref[:n], f"input {ids}"
        if n == len(ref):
            assert result.output_ids == ref
        else:
            near_ties += 1
        compared += n
    assert compared >= 0.75 * sum(len(r.output_ids) for r in results)
    assert len({t for r in results for t in r.output_ids}) >= 8
    return compared, near_ties
