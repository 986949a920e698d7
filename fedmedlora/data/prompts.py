"""The prompt templates instruction rows are written in (one place, so training and scoring agree)."""

from __future__ import annotations

# Alpaca-style template, as FlowerTune's medical baseline formats instruction data.
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def instruction_prompt(instruction: str, input_text: str = "") -> str:
    if input_text.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction.strip(), input=input_text.strip())
    return PROMPT_NO_INPUT.format(instruction=instruction.strip())
