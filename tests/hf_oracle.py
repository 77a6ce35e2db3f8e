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
