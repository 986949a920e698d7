"""NER with a causal LM (the Fed-MedLoRA setting): prompted sentence in, entity lines out, parsed back to spans.

Training is instruction tuning (TRL SFTTrainer, completion-only loss) on prompt/completion pairs: the prompt asks
for the entities of one sentence in fedmedlora's line format (`<Type>: <mention>` per line, or `none`; see
scoring/output_format.py) and the completion is the gold answer in that format. Evaluation generates greedily in
batches (left padding), parses each answer back to token spans and scores strict/lenient F1; an answer with nothing
parseable counts as "no entities" and is counted in `unparseable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.prompts import instruction_prompt
from ..scoring.output_format import entity_format_instructions, format_entities, parse_entities
from ..scoring.spans import bio_to_spans
from ..settings import Settings
from .instruct_sft import InstructSFTTask
from .token_classification import (NerOutcome, TokenClassificationTask, checked_entity_types, entity_types, ner_counts,
                                   score_ner_counts)


@dataclass
class GenerativeNerOutcome(NerOutcome):
    unparseable: int = 0
    dropped_lines: int = 0
    generations: list[str] = field(default_factory=list)


class GenerativeNERTask(InstructSFTTask):
    family = "causal"
    head = ""
    trainer_name = "trl.SFTTrainer"
    primary_metric = "strict-f1"

    def __init__(self, settings: Settings, entity_types: list[str]):
        super().__init__(settings, checked_entity_types(settings, entity_types))
        self.entity_types = self.vocabulary_items
        self.instruction = entity_format_instructions(self.entity_types)

    vocabulary = staticmethod(entity_types)
    vocabulary_from_labels = staticmethod(TokenClassificationTask.vocabulary_from_labels)

    def prompt(self, tokens: list[str]) -> str:
        return instruction_prompt(self.instruction, " ".join(tokens))

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        rows = [{"prompt": self.prompt(r["tokens"]),
                 "completion": format_entities(r["tokens"], bio_to_spans(r["tags"]))} for r in rows]
        return super().tokenize(rows, tokenizer)

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int
                ) -> GenerativeNerOutcome:
        loss = self.teacher_forced_loss(resident, dataset, batch_size)
        generations = self.generate_answers(resident, dataset, batch_size)
        outcome = GenerativeNerOutcome(loss_sum=loss.loss_sum, loss_count=loss.loss_count, generations=generations)
        for row, text in zip(rows, generations):
            parsed = parse_entities(text, row["tokens"], self.entity_types)
            outcome.gold.append(bio_to_spans(row["tags"]))
            outcome.pred.append(parsed.spans)
            outcome.unparseable += int(parsed.unparseable)
            outcome.dropped_lines += parsed.dropped_lines
        return outcome

    @staticmethod
    def counts(outcome: GenerativeNerOutcome) -> dict[str, float]:
        return {**ner_counts(outcome), "unparseable": outcome.unparseable, "dropped-lines": outcome.dropped_lines}

    @staticmethod
    def score_counts(counts: Mapping[str, float]) -> dict[str, float]:
        metrics = score_ner_counts(counts)
        metrics["unparseable"] = float(counts.get("unparseable", 0))
        metrics["dropped-lines"] = float(counts.get("dropped-lines", 0))
        return metrics
