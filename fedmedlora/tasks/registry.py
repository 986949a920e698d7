"""Which task class serves a run: keyed by (data.task, model family).

| data.task | encoder | causal |
|---|---|---|
| ner | token classification (Transformers Trainer) | generation of entity lines (TRL SFTTrainer) |
| re | classification of marked candidate pairs (Transformers Trainer) | generation of relation lines (TRL SFTTrainer) |
| instruct | (error) | TRL SFTTrainer, completion-only loss |
"""

from __future__ import annotations

from typing import Any

from ..data.rows import load_rows
from ..settings import ConfigError, Settings
from .generative_ner import GenerativeNERTask
from .generative_re import GenerativeRETask
from .instruct_sft import InstructSFTTask
from .relation_classification import RelationClassificationTask
from .token_classification import TokenClassificationTask

TASKS: dict[tuple[str, str], type] = {
    ("ner", "encoder"): TokenClassificationTask,
    ("ner", "causal"): GenerativeNERTask,
    ("re", "encoder"): RelationClassificationTask,
    ("re", "causal"): GenerativeRETask,
    ("instruct", "causal"): InstructSFTTask,
}


def task_class(settings: Settings, family: str) -> type:
    cls = TASKS.get((settings.data.task, family))
    if cls is None:
        raise ConfigError([f"key 'data.task' = {settings.data.task!r} with a {family} model ({settings.model.name}): "
                           "not supported; ner and re run on both families, instruct on causal LMs"])
    return cls


def build_task(settings: Settings, family: str, *, rows: list[dict[str, Any]] | None = None,
               vocabulary: list[str] | None = None) -> Any:
    """The task object. Its vocabulary (entity types, relation labels) is given, or read from `rows`, or from the
    rows of `data.datasets`."""
    cls = task_class(settings, family)
    if vocabulary is None:
        vocabulary = cls.vocabulary(rows if rows is not None else load_rows(settings.data.task, settings.datasets))
    return cls(settings, vocabulary)
