"""Tasks: how rows become tensors, which trainer family trains them, and how a split is scored.

A task is chosen from `data.task` and the model family (encoder or causal):

| data.task | encoder | causal |
|---|---|---|
| ner | token classification (Transformers Trainer) | generation of entity lines (TRL SFTTrainer) |
| re | classification of marked candidate pairs (Transformers Trainer) | generation of relation lines (TRL SFTTrainer) |
| instruct | (error) | TRL SFTTrainer, completion-only loss |
"""

from __future__ import annotations

from typing import Any

from ..settings import ConfigError, Settings


def build_task(settings: Settings, family: str, entity_types: list[str] | None = None, *,
               relation_labels: list[str] | None = None) -> Any:
    """The task object; for re, `relation_labels` (the encoder's classes, see relations_data.relation_labels) are
    read from `data.datasets` when not given."""
    task = settings.data.task
    if task == "ner" and family == "encoder":
        from .token_classification import TokenClassificationTask

        if not entity_types:
            raise ConfigError([f"key 'data.datasets' = {settings['data.datasets']!r}: no entity found in the data"])
        return TokenClassificationTask(settings, entity_types)
    if task == "ner" and family == "causal":
        from .generative_ner import GenerativeNERTask

        if not entity_types:
            raise ConfigError([f"key 'data.datasets' = {settings['data.datasets']!r}: no entity found in the data"])
        return GenerativeNERTask(settings, entity_types)
    if task == "re":
        if relation_labels is None:
            from ..corpora import load_rows
            from ..relations_data import relation_labels as labels_of

            relation_labels = labels_of(load_rows("re", settings.datasets))
        if not [label for label in relation_labels if label != "none"]:
            raise ConfigError([f"key 'data.datasets' = {settings['data.datasets']!r}: no relation found in the data"])
        if family == "encoder":
            from .relation_classification import RelationClassificationTask

            return RelationClassificationTask(settings, relation_labels)
        from .generative_re import GenerativeRETask

        return GenerativeRETask(settings, relation_labels)
    if task == "instruct" and family == "causal":
        from .instruct_sft import InstructSFTTask

        return InstructSFTTask(settings)
    raise ConfigError([f"key 'data.task' = {task!r} with a {family} model ({settings.model.name}): not supported; "
                       "ner and re run on both families, instruct on causal LMs"])
