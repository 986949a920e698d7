"""Scoring one QA dataset end to end: prompts -> model -> answers -> counts, handing each batch's records on as it
finishes so they reach disk even if a later batch fails.

Modes:
    generate       FlowerTune's protocol (greedy generation, its token budget, its answer extraction), batched with
                   left padding; batches are formed from prompts of similar length, longest first
    generate-loop  the same, one prompt at a time in dataset order, as FlowerTune's script runs (the slow reference)
    loglik         no generation: the option whose answer's first token is most probable after the prompt
    generate+loglik  both result sets (`evaluate_qa_dataset_modes`); when every item's generation budget is one
                   token (letters; yes/no/maybe on most real tokenizers) and the model's generation config adds no
                   logits processor, from ONE forward pass per batch: greedy generation's single token is the
                   argmax of the very logits loglik reads, so the generate records equal those of `generate` and
                   the loglik records those of `loglik` (tested), at the cost of one mode
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from ..data.qa_benchmarks import QADataset, QAItem
from ..data.qa_prompts import ANSWER_LEAD_IN, PROTOCOLS, QAProtocol
from ..model.generation import generate_batched, generate_one
from ..scoring.qa_answers import answer_letter, extract_answer
from .inference import (continuation_token_ids, generation_budgets, greedy_token_and_option_logprobs,
                        one_pass_is_exact, option_logprobs)

MODES = ("generate", "generate-loop", "loglik")
COMBINED_MODES = {"generate+loglik": ("generate", "loglik")}

RecordSink = Callable[[list[dict[str, Any]]], None]


class QAScoringError(ValueError):
    """A dataset that cannot be scored as asked (loglik with answers sharing their first token); says what to do."""


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
    shared_pass: bool = False  # scored in one pass together with another mode (seconds are that pass's)

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
            "shared_pass": self.shared_pass,
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


def evaluate_qa_dataset_modes(
    model: Any,
    tokenizer: Any,
    dataset: QADataset,
    modes: Sequence[str],
    *,
    batch_size: int = 16,
    on_records: Mapping[str, RecordSink] | None = None,
    progress: bool = True,
) -> dict[str, QADatasetResult]:
    """Score `dataset` in each of `modes`; `on_records[mode]` receives that mode's batches as they finish.

    generate and loglik together share one forward pass per batch when that is exact (see the module docstring and
    `one_pass_is_exact`); otherwise, and for any other combination, the modes run one after the other."""
    on_records = dict(on_records or {})
    modes = list(modes)
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if sorted(modes) == ["generate", "loglik"]:
        scorer = _Scorer(model, tokenizer, dataset, PROTOCOLS[dataset.protocol], batch_size)
        if one_pass_is_exact(model, scorer.budgets()) is None:
            return _run_shared_pass(scorer, dataset, on_records, progress)
    return {mode: evaluate_qa_dataset(model, tokenizer, dataset, mode=mode, batch_size=batch_size,
                                      on_records=on_records.get(mode), progress=progress) for mode in modes}


def _run_shared_pass(scorer: "_Scorer", dataset: QADataset, on_records: Mapping[str, RecordSink],
                     progress: bool) -> dict[str, QADatasetResult]:
    results = {mode: QADatasetResult(dataset.name, mode, shared_pass=True) for mode in ("generate", "loglik")}
    started = time.perf_counter()
    bar = tqdm(total=len(dataset.items), desc=f"{dataset.name} [generate+loglik]", unit="q", disable=not progress)
    try:
        for batch in scorer.generate_and_loglik():
            for mode, records in zip(("generate", "loglik"), batch):
                for record in records:
                    results[mode].add(record)
                if on_records.get(mode) is not None:
                    on_records[mode](records)
            bar.update(len(batch[0]))
            bar.set_postfix(acc=f"{results['generate'].accuracy:.3f}/{results['loglik'].accuracy:.3f}")
    finally:
        bar.close()
        for result in results.values():
            result.seconds = time.perf_counter() - started
    return results


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

    def budgets(self) -> list[int]:
        counts = [len(self.tokenizer(texts[item.gold], add_special_tokens=False)["input_ids"])
                  for item, texts in zip(self.items, self.answer_texts)]
        return generation_budgets(counts, self.batch_size)

    def _generation_record(self, i: int, generation: str, budget: int) -> dict[str, Any]:
        item = self.items[i]
        extracted = extract_answer(generation, self.protocol.answer_type, extra_letters=item.options)
        prediction = answer_letter(extracted, self.answer_texts[i])
        return self._record(i, prediction, generation=generation, extracted=extracted, max_new_tokens=budget)

    def generate_batched(self):
        budgets = self.budgets()
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
        budgets = self.budgets()
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
                raise QAScoringError(
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
            yield [self._loglik_record(j, row) for j, row in zip(batch, scores)]

    def _loglik_record(self, i: int, row: list[float]) -> dict[str, Any]:
        letters = list(self.items[i].options)
        best = max(range(len(row)), key=row.__getitem__)  # first option wins an exact tie
        return self._record(i, letters[best], option_logprobs=dict(zip(letters, row)))

    # --- both from one pass (every budget is one token) -----------------------------------------------------------

    def generate_and_loglik(self):
        """(generate records, loglik records) per batch. Batches are those of both single modes: with every budget
        1, `generate_batched`'s order (budget, longest first, index) is `loglik`'s (longest first, index)."""
        budgets = self.budgets()
        assert all(budget == 1 for budget in budgets), "one pass reproduces one-token generation only"
        option_tokens = self._first_answer_tokens()
        prompt_ids = self.tokenizer(self.prompts)["input_ids"]
        order = sorted(range(len(self.items)), key=lambda i: (-len(prompt_ids[i]), i))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            generations, scores = greedy_token_and_option_logprobs(
                self.model, self.tokenizer, [prompt_ids[j] for j in batch], [option_tokens[j] for j in batch])
            yield ([self._generation_record(j, text, budgets[j]) for j, text in zip(batch, generations)],
                   [self._loglik_record(j, row) for j, row in zip(batch, scores)])

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
