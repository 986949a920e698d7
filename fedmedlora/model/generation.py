"""Greedy generation with a causal LM, batched with left padding or one prompt at a time.

Batching uses left padding: every row's prompt ends at the last column, so the next token is read from the same
place in every row and generated tokens line up. The attention mask hides the pad columns, and `generate` derives
position ids from the mask, so a padded row computes the same function as the prompt alone; what remains is float
rounding from different matrix shapes, about 1e-6 on the logits, far below the gaps greedy decoding depends on
(tests/test_eval_qa_batching.py checks batched == loop, token for token). Used by the generative tasks (answers to
score) and by the QA evaluation.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

# Greedy decoding as FlowerTune asks for it; temperature/top_p at their neutral values also silence generation
# configs that ship sampling settings (e.g. Llama-3-Instruct's temperature 0.6).
GREEDY = {"do_sample": False, "top_p": 1.0, "temperature": 1.0}


def input_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with each row right-aligned."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; batched scoring needs one to pad with")
    return pad


@torch.inference_mode()
def generate_batched(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of several tokenized prompts in one `generate` call, decoded without special tokens."""
    pad = pad_token_id(tokenizer)
    ids, mask = left_pad(prompt_ids, pad, input_device(model))
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad,
                         **GREEDY)
    # Rows that stop early are filled with the pad token, which skip_special_tokens drops like the eos itself.
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, ids.shape[1]:]]


@torch.inference_mode()
def generate_one(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """FlowerTune's own loop body: encode one prompt (with the tokenizer's special tokens), generate, decode."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(input_device(model))
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else
                         pad_token_id(tokenizer), **GREEDY)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
