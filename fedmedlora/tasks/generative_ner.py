"""NER with a causal LM (the Fed-MedLoRA setting): prompted sentence in, entity lines out, parsed back to spans.

Training is instruction tuning (TRL SFTTrainer, completion-only loss) on prompt/completion pairs: the prompt asks
for the entities of one sentence in fedmedlora's line format (`<Type>: <mention>` per line, or `none`; see
scoring/output_format.py) and the completion is the gold answer in that format. Evaluation generates greedily in
batches (left padding), parses each answer back to token spans and scores strict/lenient F1; an answer with nothing
parseable counts as "no entities" and is counted in `unparseable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..corpora import instruction_prompt
from ..scoring.output_format import entity_format_instructions, format_entities, parse_entities
from ..scoring.spans import bio_to_spans
from ..settings import Settings
from .instruct_sft import InstructSFTTask
from .token_classification import NerOutcome


@dataclass
class GenerativeNerOutcome(NerOutcome):
    unparseable: int = 0
    dropped_lines: int = 0
    generations: list[str] | None = None


class GenerativeNERTask(InstructSFTTask):
    family = "causal"
    trainer_name = "trl.SFTTrainer"
    primary_metric = "strict-f1"

    def __init__(self, settings: Settings, entity_types: list[str]):
        super().__init__(settings)
        self.entity_types = entity_types
        self.instruction = entity_format_instructions(entity_types)

    def prompt(self, tokens: list[str]) -> str:
        return instruction_prompt(self.instruction, " ".join(tokens))

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        rows = [{"prompt": self.prompt(r["tokens"]),
                 "completion": format_entities(r["tokens"], bio_to_spans(r["tags"]))} for r in rows]
        return super().tokenize(rows, tokenizer)

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int,
                completion_only: bool = True) -> GenerativeNerOutcome:
        loss = super().predict(resident, rows, dataset, batch_size, completion_only=completion_only)
        generations = self.generate_answers(resident, dataset, batch_size)
        outcome = GenerativeNerOutcome(loss_sum=loss.nll_sum, loss_tokens=loss.tokens, generations=generations)
        for row, text in zip(rows, generations):
            parsed = parse_entities(text, row["tokens"], self.entity_types)
            outcome.gold.append(bio_to_spans(row["tags"]))
            outcome.pred.append(parsed.spans)
            outcome.unparseable += int(parsed.unparseable)
            outcome.dropped_lines += parsed.dropped_lines
        return outcome

    @staticmethod
    def merge(outcomes: list[GenerativeNerOutcome]) -> GenerativeNerOutcome:
        merged = GenerativeNerOutcome()
        for o in outcomes:
            merged.gold += o.gold
            merged.pred += o.pred
            merged.loss_sum += o.loss_sum
            merged.loss_tokens += o.loss_tokens
            merged.unparseable += o.unparseable
            merged.dropped_lines += o.dropped_lines
        return merged

    @staticmethod
    def score(outcome: GenerativeNerOutcome) -> dict[str, float]:
        from .token_classification import TokenClassificationTask

        metrics = TokenClassificationTask.score(outcome)
        metrics["unparseable"] = float(outcome.unparseable)
        metrics["dropped-lines"] = float(outcome.dropped_lines)
        return metrics
