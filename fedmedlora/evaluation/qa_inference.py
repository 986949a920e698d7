"""Scoring a causal LM on QA prompts: FlowerTune's generation budget and option log-likelihood (generation itself is
in ../model/generation.py).

For the plain forward pass of `option_logprobs` the position ids count only real tokens, as `generate` derives them
from the mask. (Rotary models like Llama would not notice the constant shift that left padding otherwise adds to
positions, but models with learned absolute positions would.)
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..model.generation import input_device, left_pad, pad_token_id


def generation_budgets(answer_token_counts: Sequence[int], batch_size: int) -> list[int]:
    """max_new_tokens per item by FlowerTune's rule: it walks the dataset in consecutive chunks of `batch_size` and
    lets every item of a chunk generate as many tokens as the *first* item's gold answer has. With one-token answers
    (letters; yes/no/maybe on most real tokenizers) that is 1 for all; we keep the rule so counts stay comparable."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    budgets = []
    for start in range(0, len(answer_token_counts), batch_size):
        chunk = answer_token_counts[start:start + batch_size]
        budgets.extend([chunk[0]] * len(chunk))
    return budgets


def continuation_token_ids(tokenizer: Any, lead_in: str, text: str) -> list[int]:
    """Tokens of `text` as they follow `lead_in` inside a prompt (tokenizing the text alone can differ, e.g. a
    SentencePiece tokenizer would add its word-start marker)."""
    base = tokenizer(lead_in, add_special_tokens=False)["input_ids"]
    full = tokenizer(lead_in + text, add_special_tokens=False)["input_ids"]
    if full[:len(base)] == base and len(full) > len(base):
        return list(full[len(base):])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _accepts_logits_to_keep(model: Any) -> bool:
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(core.forward).parameters


@torch.inference_mode()
def option_logprobs(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
                    option_tokens: Sequence[Sequence[int]]) -> list[list[float]]:
    """log P(first token of each option's answer | prompt), one forward pass for the whole batch.

    `option_tokens[i]` lists, for prompt i, the first answer token of each option in option order.
    """
    pad = pad_token_id(tokenizer)
    ids, mask = left_pad(prompt_ids, pad, input_device(model))
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}  # only the last position's logits
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra).logits
    logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu()
    return [logprobs[i, list(tokens)].tolist() for i, tokens in enumerate(option_tokens)]
