"""Scoring one QA dataset end to end: prompts -> model -> answers -> counts, handing each batch's records on as it
finishes so they reach disk even if a later batch fails.

Modes:
    generate       FlowerTune's protocol (greedy generation, its token budget, its answer extraction), batched with
                   left padding; batches are formed from prompts of similar length, longest first
    generate-loop  the same, one prompt at a time in dataset order, as FlowerTune's script runs (the slow reference)
    loglik         no generation: the option whose answer's first token is most probable after the prompt
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from .answer_extraction import answer_letter, extract_answer
from .errors import EvalInputError
from .qa_datasets import QADataset, QAItem
from ..model.generation import generate_batched, generate_one
from .qa_inference import continuation_token_ids, generation_budgets, option_logprobs
from .qa_prompts import ANSWER_LEAD_IN, PROTOCOLS, QAProtocol

MODES = ("generate", "generate-loop", "loglik")

RecordSink = Callable[[list[dict[str, Any]]], None]


@dataclass
class QADatasetResult:
    dataset: str
    mode: str
    total: int = 0
    correct: int = 0
    unparseable: int = 0
    predicted: Counter = field(default_factory=Counter)
    gold: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.total += 1
        self.correct += int(record["correct"])
        self.gold[record["gold"]] += 1
        if record["prediction"] is None:
            self.unparseable += 1
        else:
            self.predicted[record["prediction"]] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "accuracy": self.accuracy,
            "total": self.total,
            "correct": self.correct,
            "unparseable": self.unparseable,
            "predicted_distribution": dict(sorted(self.predicted.items())),
            "gold_distribution": dict(sorted(self.gold.items())),
            "seconds": round(self.seconds, 3),
            "prompts_per_second": round(self.total / self.seconds, 3) if self.seconds else None,
        }


def evaluate_qa_dataset(
    model: Any,
    tokenizer: Any,
    dataset: QADataset,
    *,
    mode: str = "generate",
    batch_size: int = 16,
    on_records: RecordSink | None = None,
    progress: bool = True,
) -> QADatasetResult:
    """Score every item of `dataset`; `on_records` receives each finished batch's records (see `_record`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    protocol = PROTOCOLS[dataset.protocol]
    scorer = _Scorer(model, tokenizer, dataset, protocol, batch_size)
    result = QADatasetResult(dataset.name, mode)
    started = time.perf_counter()
    bar = tqdm(total=len(dataset.items), desc=f"{dataset.name} [{mode}]", unit="q", disable=not progress)
    try:
        run = {"generate": scorer.generate_batched, "generate-loop": scorer.generate_loop, "loglik": scorer.loglik}
        for records in run[mode]():
            for record in records:
                result.add(record)
            if on_records is not None:
                on_records(records)
            bar.update(len(records))
            bar.set_postfix(acc=f"{result.accuracy:.3f}")
    finally:
        bar.close()
        result.seconds = time.perf_counter() - started
    return result


class _Scorer:
    def __init__(self, model: Any, tokenizer: Any, dataset: QADataset, protocol: QAProtocol, batch_size: int):
        self.model = model
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.protocol = protocol
        self.batch_size = batch_size
        self.items = dataset.items
        self.prompts = [protocol.prompt(item) for item in self.items]
        self.answer_texts = [{letter: protocol.answer_text(item, letter) for letter in item.options}
                             for item in self.items]

    # --- generation ---------------------------------------------------------------------------------------------

    def _budgets(self) -> list[int]:
        counts = [len(self.tokenizer(texts[item.gold], add_special_tokens=False)["input_ids"])
                  for item, texts in zip(self.items, self.answer_texts)]
        return generation_budgets(counts, self.batch_size)

    def _generation_record(self, i: int, generation: str, budget: int) -> dict[str, Any]:
        item = self.items[i]
        extracted = extract_answer(generation, self.protocol.answer_type, extra_letters=item.options)
        prediction = answer_letter(extracted, self.answer_texts[i])
        return self._record(i, prediction, generation=generation, extracted=extracted, max_new_tokens=budget)

    def generate_batched(self):
        budgets = self._budgets()
        prompt_ids = self.tokenizer(self.prompts)["input_ids"]
        # Same-budget batches of similar length (little padding), longest first (memory trouble shows up at once).
        order = sorted(range(len(self.items)), key=lambda i: (budgets[i], -len(prompt_ids[i]), i))
        batch: list[int] = []
        for position, i in enumerate(order):
            batch.append(i)
            last = position == len(order) - 1
            if len(batch) == self.batch_size or last or budgets[order[position + 1]] != budgets[i]:
                generations = generate_batched(self.model, self.tokenizer, [prompt_ids[j] for j in batch],
                                               budgets[i])
                yield [self._generation_record(j, g, budgets[j]) for j, g in zip(batch, generations)]
                batch = []

    def generate_loop(self):
        budgets = self._budgets()
        records = []
        for i, prompt in enumerate(self.prompts):
            records.append(self._generation_record(i, generate_one(self.model, self.tokenizer, prompt, budgets[i]),
                                                   budgets[i]))
            if len(records) == self.batch_size or i == len(self.prompts) - 1:
                yield records
                records = []

    # --- log-likelihood -----------------------------------------------------------------------------------------

    def _first_answer_tokens(self) -> list[list[int]]:
        cache: dict[str, int] = {}
        per_item = []
        for item, texts in zip(self.items, self.answer_texts):
            tokens = []
            for text in texts.values():
                if text not in cache:
                    cache[text] = continuation_token_ids(self.tokenizer, ANSWER_LEAD_IN, text)[0]
                tokens.append(cache[text])
            if len(set(tokens)) < len(tokens):
                raise EvalInputError(
                    f"dataset {self.dataset.name}, item {item.id}: answers {list(texts.values())} start with the "
                    "same token for this tokenizer, so --mode loglik cannot tell them apart; use --mode generate"
                )
            per_item.append(tokens)
        return per_item

    def loglik(self):
        option_tokens = self._first_answer_tokens()
        prompt_ids = self.tokenizer(self.prompts)["input_ids"]
        order = sorted(range(len(self.items)), key=lambda i: (-len(prompt_ids[i]), i))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            scores = option_logprobs(self.model, self.tokenizer, [prompt_ids[j] for j in batch],
                                     [option_tokens[j] for j in batch])
            records = []
            for j, row in zip(batch, scores):
                letters = list(self.items[j].options)
                best = max(range(len(row)), key=row.__getitem__)  # first option wins an exact tie
                records.append(self._record(j, letters[best], option_logprobs=dict(zip(letters, row))))
            yield records

    # --- records ------------------------------------------------------------------------------------------------

    def _record(self, i: int, prediction: str | None, **details: Any) -> dict[str, Any]:
        """One JSONL line: which item, what it was asked, the gold and predicted letters, and how we got there."""
        item: QAItem = self.items[i]
        return {
            "index": i,
            "id": item.id,
            "prompt": self.prompts[i],
            "gold": item.gold,
            "gold_answer": self.answer_texts[i][item.gold],
            "prediction": prediction,
            "correct": prediction == item.gold,
            # Every line has every key; what the mode does not produce is null.
            "generation": None,
            "extracted": None,
            "max_new_tokens": None,
            "option_logprobs": None,
            **details,
        }
