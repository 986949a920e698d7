"""Relation extraction with a causal LM: a prompted text unit in, relation lines out, parsed back to relations.

Training is instruction tuning (TRL SFTTrainer, completion-only loss) on prompt/completion pairs. The prompt gives
the answer format (`relation_format_instructions`: `<head> | <type> | <tail>` per line, or `none`), the unit's hint
on argument roles (e.g. "A CID relation goes from a Chemical (head) to a Disease (tail).") and the text (a
document's title and abstract, or a sentence); the completion is the unit's gold relations in that format
(`format_relations`), each triple once, in order of the head's first appearance. A text too long for
`data.max-length` is cut at its end, keeping a quarter of the budget for the answer, so relations stated only in
the lost part cost recall.

Evaluation generates greedily in batches (left padding) and parses each answer with `parse_relations`; an answer
with no recognisable line counts as no relations and is counted in `unparseable`. Scoring is at concept level
(`score_relations`): a generated head or tail that equals, after normalisation (case, whitespace), any mention of
one of the unit's concepts stands for that concept's name (a mention shared by several concepts, e.g. a composite
"hemorrhagic cystitis", stands for whichever makes the relation a gold one); strict then means both arguments name
the gold concepts; lenient, that each shares a word with the gold concept's name. Other strings are scored as
written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.prompts import instruction_prompt
from ..data.relation_fields import NONE_LABEL, relation_labels, union_relation_labels
from ..scoring.output_format import format_relations, parse_relations, relation_format_instructions
from ..scoring.relations import Relation, normalize_concept
from ..settings import ConfigError, Settings
from .instruct_sft import InstructSFTTask
from .relation_classification import (RelationOutcome, checked_relation_labels, gold_relations,
                                      relation_outcome_counts, score_relation_counts)


MIN_TEXT_TOKENS = 16  # below this, data.max-length is too short for any text beside the instructions


@dataclass
class GenerativeRelationOutcome(RelationOutcome):
    unparseable: int = 0
    dropped_lines: int = 0
    generations: list[str] = field(default_factory=list)


def completion_relations(row: dict[str, Any]) -> list[Relation]:
    """The unit's gold relations as the model learns to write them: each triple once, by the head's position."""
    folded = row["text"].casefold()
    unique = list(dict.fromkeys(gold_relations(row)))

    def position(name: str) -> int:
        found = folded.find(name.casefold())
        return found if found >= 0 else len(folded)

    return sorted(unique, key=lambda r: (position(r.head), position(r.tail)))


def resolve(relation: Relation, aliases: dict[str, list[str]], gold: list[Relation]) -> Relation:
    """A parsed relation with its arguments replaced by the concept names they mention (see the module docstring)."""
    heads = aliases.get(normalize_concept(relation.head)) or [relation.head]
    tails = aliases.get(normalize_concept(relation.tail)) or [relation.tail]
    options = [(h, t) for h in heads for t in tails]
    typed = {(normalize_concept(g.head), normalize_concept(g.tail), g.type) for g in gold}
    pairs = {(normalize_concept(g.head), normalize_concept(g.tail)) for g in gold}
    for wanted in (lambda h, t: (normalize_concept(h), normalize_concept(t), relation.type) in typed,
                   lambda h, t: (normalize_concept(h), normalize_concept(t)) in pairs):
        for h, t in options:
            if wanted(h, t):
                return Relation(h, t, relation.type)
    return Relation(*options[0], relation.type)


class GenerativeRETask(InstructSFTTask):
    family = "causal"
    head = ""
    trainer_name = "trl.SFTTrainer"
    primary_metric = "typed-strict-micro-f1"

    def __init__(self, settings: Settings, relation_types: list[str]):
        super().__init__(settings, checked_relation_labels(settings, relation_types))
        self.relation_types = [t for t in self.vocabulary_items if t != NONE_LABEL]
        self.instruction = relation_format_instructions(self.relation_types)

    vocabulary = staticmethod(relation_labels)
    union_vocabulary = staticmethod(union_relation_labels)

    def prompt(self, row: dict[str, Any], tokenizer: Any) -> str:
        instruction = f"{self.instruction} {row['hint']}".strip()
        return instruction_prompt(instruction, self.fit_text(row["text"], instruction, tokenizer))

    def fit_text(self, text: str, instruction: str, tokenizer: Any) -> str:
        """The text, cut at its end so the prompt leaves a quarter of data.max-length for the answer."""
        max_length = self.settings.data.max_length
        overhead = len(tokenizer(instruction_prompt(instruction, "."))["input_ids"])
        budget = max_length - max_length // 4 - overhead
        if budget < MIN_TEXT_TOKENS:
            raise ConfigError([f"key 'data.max-length' = {max_length}: the prompt's instructions take {overhead} "
                               f"tokens and a quarter is kept for the answer, leaving {max(budget, 0)} for the text; "
                               f"use at least {(overhead + MIN_TEXT_TOKENS) * 4 // 3 + 1} (documents need several "
                               "hundred more)"])
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast, verbose=False)
        if len(encoded["input_ids"]) <= budget:
            return text
        if tokenizer.is_fast:
            return text[: encoded["offset_mapping"][budget - 1][1]]
        return tokenizer.decode(encoded["input_ids"][:budget])

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        rows = [{"prompt": self.prompt(r, tokenizer), "completion": format_relations(completion_relations(r))}
                for r in rows]
        return super().tokenize(rows, tokenizer)

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int
                ) -> GenerativeRelationOutcome:
        loss = self.teacher_forced_loss(resident, dataset, batch_size)
        outcome = GenerativeRelationOutcome(loss_sum=loss.loss_sum, loss_count=loss.loss_count)
        generations = self.generate_answers(resident, dataset, batch_size)
        self.read_answers(rows, generations, outcome)
        return outcome

    def read_answers(self, rows: list[dict[str, Any]], generations: list[str],
                     outcome: GenerativeRelationOutcome) -> GenerativeRelationOutcome:
        """Parse each unit's generated answer into concept-level relations beside its gold ones."""
        outcome.generations += list(generations)
        for row, text in zip(rows, generations, strict=True):
            gold = gold_relations(row)
            aliases: dict[str, list[str]] = {}
            for entry in row["aliases"]:
                aliases.setdefault(entry["alias"], []).append(entry["name"])
            parsed = parse_relations(text, self.relation_types)
            outcome.gold.append(gold)
            outcome.pred.append([resolve(r, aliases, gold) for r in parsed.relations])
            outcome.unparseable += int(parsed.unparseable)
            outcome.dropped_lines += parsed.dropped_lines
        return outcome

    @staticmethod
    def counts(outcome: GenerativeRelationOutcome) -> dict[str, float]:
        return {**relation_outcome_counts(outcome), "unparseable": outcome.unparseable,
                "dropped-lines": outcome.dropped_lines}

    @staticmethod
    def score_counts(counts: Mapping[str, float]) -> dict[str, float]:
        metrics = score_relation_counts(counts)
        metrics["unparseable"] = float(counts.get("unparseable", 0))
        metrics["dropped-lines"] = float(counts.get("dropped-lines", 0))
        return metrics
