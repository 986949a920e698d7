"""Instruction tuning of a causal LM with TRL's SFTTrainer (prompt/completion rows, completion-only loss).

Rows are tokenized here once per worker (`input_ids` + `completion_mask`), and TRL is told to skip its own dataset
preparation, so a round costs only the optimizer steps. Evaluation is the completion-only token cross-entropy (and
perplexity) on a held-out split, which is what TRL minimises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model.generation import generate_batched
from ..settings import Settings
from .base import Outcome, TaskBase, loss_counts, loss_of


@dataclass
class LossOutcome(Outcome):
    """Summed token NLL (`loss_sum`) over `loss_count` scored tokens of `examples` rows."""

    examples: int = 0


class InstructSFTTask(TaskBase):
    family = "causal"
    head = ""
    trainer_name = "trl.SFTTrainer"
    primary_metric = "loss"

    def __init__(self, settings: Settings, vocabulary: list[str] | None = None):
        super().__init__(settings, vocabulary or [])
        self.labels: list[str] = []

    def encode(self, prompt: str, completion: str, tokenizer: Any) -> tuple[list[int], list[int]]:
        """input_ids and completion_mask of one example, cut to data.max-length.

        A prompt longer than half the budget is cut from the left (its start is the fixed instruction preamble,
        the end holds the question), so every example keeps completion tokens to learn from.
        """
        max_length = self.settings.data.max_length
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) > max_length // 2 and len(prompt_ids) + len(completion_ids) > max_length:
            keep = max(max_length // 2, max_length - len(completion_ids))
            prompt_ids = prompt_ids[-keep:]
        ids = (prompt_ids + completion_ids)[:max_length]
        mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[:max_length]
        return ids, mask

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        import datasets

        input_ids, completion_mask, labels = [], [], []
        completion_only = self.settings.train.completion_only_loss
        for row in rows:
            ids, mask = self.encode(row["prompt"], row["completion"], tokenizer)
            input_ids.append(ids)
            completion_mask.append(mask)
            # TRL builds labels only when it prepares the dataset itself, which we skip: build them here
            labels.append([t if m or not completion_only else -100 for t, m in zip(ids, mask)])
        return datasets.Dataset.from_dict({"input_ids": input_ids, "completion_mask": completion_mask,
                                           "labels": labels})

    def count_tokens(self, dataset: Any) -> int:
        """Training tokens (completion tokens when the loss is completion-only): Fed-MedLoRA's client weight."""
        if self.settings.train.completion_only_loss:
            return int(sum(sum(m) for m in dataset["completion_mask"]))
        return int(sum(len(ids) for ids in dataset["input_ids"]))

    def make_trainer(self, resident: Any, train_dataset: Any, args: Any) -> Any:
        from ..model.sft_trainer import SiteSFTTrainer

        return SiteSFTTrainer(model=resident.model, args=args, train_dataset=train_dataset,
                              processing_class=resident.tokenizer)

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int) -> LossOutcome:
        """The completion loss of the split: what TRL minimises."""
        return self.teacher_forced_loss(resident, dataset, batch_size)

    def teacher_forced_loss(self, resident: Any, dataset: Any, batch_size: int,
                            completion_only: bool = True) -> LossOutcome:
        """Summed token NLL over the split (completion tokens only unless `completion_only` is False)."""
        import torch

        model, tokenizer = resident.model, resident.tokenizer
        device = next(model.parameters()).device
        columns = dataset[:]  # one columnar read: row-wise Dataset access is slow
        order = sorted(range(len(dataset)), key=lambda i: len(columns["input_ids"][i]))
        outcome = LossOutcome(examples=len(dataset))
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                width = max(len(columns["input_ids"][i]) for i in idx)
                ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                scored = torch.zeros((len(idx), width), dtype=torch.bool)
                for j, i in enumerate(idx):
                    row_ids, row_mask = columns["input_ids"][i], columns["completion_mask"][i]
                    ids[j, : len(row_ids)] = torch.tensor(row_ids)
                    attention[j, : len(row_ids)] = 1
                    scored[j, : len(row_ids)] = torch.tensor(row_mask, dtype=torch.bool) if completion_only else True
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
                # position t predicts token t+1
                targets = ids[:, 1:].to(device)
                keep = scored[:, 1:].to(device) & attention[:, 1:].bool().to(device)
                nll = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep], reduction="sum")
                outcome.loss_sum += float(nll)
                outcome.loss_count += int(keep.sum())
        if was_training:
            model.train()
        return outcome

    def max_new_tokens(self, columns: dict[str, list], idx: list[int]) -> int:
        """Room for the longest gold answer in the batch plus a margin, within data.max-length."""
        longest = max(sum(columns["completion_mask"][i]) for i in idx)
        return max(8, min(2 * longest + 8, self.settings.data.max_length))

    def generate_answers(self, resident: Any, dataset: Any, batch_size: int) -> list[str]:
        """Greedy answers to each row's prompt (its tokens before the completion), batched by prompt length."""
        if len(dataset) == 0:
            return []
        model, tokenizer = resident.model, resident.tokenizer
        columns = dataset[:]
        prompts = [ids[: mask.index(1)] if 1 in mask else ids
                   for ids, mask in zip(columns["input_ids"], columns["completion_mask"])]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        generations: list[str] = [""] * len(prompts)
        was_training = model.training
        model.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            texts = generate_batched(model, tokenizer, [prompts[i] for i in idx], self.max_new_tokens(columns, idx))
            for i, text in zip(idx, texts):
                generations[i] = text
        if was_training:
            model.train()
        return generations

    def validation_loss(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int,
                        completion_only: bool = True) -> tuple[float, int]:
        """(summed token NLL, scored tokens): Fed-MedLoRA+'s server-side score of an adapter, teacher-forced in
        every subclass. `completion_only = False` scores every token after the first, prompt included (the seed's
        validation loss)."""
        outcome = self.teacher_forced_loss(resident, dataset, batch_size, completion_only=completion_only)
        return outcome.loss_sum, outcome.loss_count

    @staticmethod
    def counts(outcome: LossOutcome) -> dict[str, float]:
        return {**loss_counts(outcome), "examples": outcome.examples}

    @staticmethod
    def score_counts(counts: Mapping[str, float]) -> dict[str, float]:
        loss = loss_of(counts)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(counts.get("loss-count", 0)),
                "examples": float(counts.get("examples", 0))}
