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
def _next_token_logits(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """float32 logits of the token after each prompt (left-padded batch, one forward pass), on the model's device."""
    pad = pad_token_id(tokenizer)
    ids, mask = left_pad(prompt_ids, pad, input_device(model))
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}  # only the last position's logits
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra).logits
    return logits[:, -1, :].float()


def _option_rows(logprobs: torch.Tensor, option_tokens: Sequence[Sequence[int]]) -> list[list[float]]:
    return [logprobs[i, list(tokens)].tolist() for i, tokens in enumerate(option_tokens)]


@torch.inference_mode()
def option_logprobs(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
                    option_tokens: Sequence[Sequence[int]]) -> list[list[float]]:
    """log P(first token of each option's answer | prompt), one forward pass for the whole batch.

    `option_tokens[i]` lists, for prompt i, the first answer token of each option in option order.
    """
    logprobs = torch.log_softmax(_next_token_logits(model, tokenizer, prompt_ids), dim=-1).cpu()
    return _option_rows(logprobs, option_tokens)


@torch.inference_mode()
def greedy_token_and_option_logprobs(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
                                     option_tokens: Sequence[Sequence[int]]) -> tuple[list[str], list[list[float]]]:
    """From one forward pass: what greedy generation of one new token writes after each prompt (decoded as
    `generate_batched` decodes it, so an end-of-sequence token gives "") and `option_logprobs`'s rows.

    Greedy decoding picks the argmax of these same last-position logits (`generate` reads them in float32, from the
    same left-padded batch); this equals `generate_batched(..., max_new_tokens=1)` when `generate` applies no logits
    processor, which `one_pass_is_exact` checks. tests/test_eval_qa_fused.py compares both, record for record."""
    logits = _next_token_logits(model, tokenizer, prompt_ids)
    greedy = torch.argmax(logits, dim=-1).cpu()  # the function and tie rule `generate`'s greedy search uses
    texts = [tokenizer.decode([int(token)], skip_special_tokens=True) for token in greedy]
    return texts, _option_rows(torch.log_softmax(logits, dim=-1).cpu(), option_tokens)


# Generation-config fields that leave greedy decoding's first token the plain argmax of the logits: token ids,
# sampling knobs (`GREEDY` turns sampling off), lengths and output flags. Any other field set on a model (a repetition
# penalty, forced or suppressed tokens, minimum lengths, beams, ...) may change the pick: no one-pass shortcut then.
NEUTRAL_GENERATION_FIELDS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "do_sample", "temperature", "top_p",
    "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "max_length", "max_new_tokens", "use_cache",
    "cache_implementation", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
    "return_dict_in_generate", "transformers_version", "_from_model_config",
})


def one_pass_is_exact(model: Any, budgets: Sequence[int]) -> str | None:
    """None when `greedy_token_and_option_logprobs` reproduces `generate` for every item; else why not."""
    if any(budget != 1 for budget in budgets):
        return "some gold answers are longer than one token, so generation needs more than one step"
    config = getattr(model, "generation_config", None)
    if config is None:
        return "the model has no generation config to check"
    extra = sorted(set(config.to_diff_dict()) - NEUTRAL_GENERATION_FIELDS)
    if extra:
        return f"the model's generation config sets {', '.join(extra)}, which may change greedy decoding's pick"
    return None
