"""The resident model: the frozen base and its LoRA wrapper, loaded once per worker process and kept.

Flower's simulation runs ClientApps in long-lived Ray actors (and the ServerApp in one process), so a module-level
slot outlives rounds and serves every node the actor plays. Each client call only swaps the adapter tensors in
(`load_adapter_state`) and builds a fresh optimizer; the base weights are never reloaded or copied. The slot holds one
model: asking for a different one evicts the old (memory stays flat). The job (../job.py) keeps the tokenized data.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import ConfigError, Settings
from .adapter import family_of_head, lora_config, missing_target_modules
from .loading import load_base_model, load_tokenizer

LOG = logging.getLogger(__name__)

MODEL_KEYS = ("model.name", "model.dtype", "model.quantization", "model.attn-implementation",
              "model.gradient-checkpointing", "lora.r", "lora.alpha", "lora.dropout", "lora.target-modules")


@dataclass
class Resident:
    model: Any  # peft.PeftModel
    tokenizer: Any
    family: str
    labels: tuple[str, ...]
    key: tuple


_LOCK = threading.Lock()
_SLOT: dict[str, Resident] = {}
_LOADS = 0
_LOAD_SECONDS = 0.0


def base_model_loads() -> int:
    """How many times this process has loaded a base model (1 for a whole run when residency works)."""
    return _LOADS


def forget_resident_model() -> None:
    """Drop the model this process holds: what a new ClientApp process starts without (tests, benches)."""
    with _LOCK:
        _SLOT.clear()


def base_model_load_seconds() -> float:
    """Seconds this process has spent loading base models (weights, PEFT wrapper, tokenizer)."""
    return _LOAD_SECONDS


def resident_model(settings: Settings, head: str, labels: list[str], cache_dir: Path | None = None) -> Resident:
    """The process's model for these settings and task head ("" a causal LM, "token"/"sequence" an encoder's new
    classification head over `labels`), loaded now unless the slot already holds it (with `cache_dir`, a converted
    base is kept there: base_cache.py)."""
    global _LOADS, _LOAD_SECONDS
    family = family_of_head(head)
    key = (tuple(settings[k] for k in MODEL_KEYS), settings.adapter_kind, head, tuple(labels))
    with _LOCK:
        current = _SLOT.get("model")
        if current is not None and current.key == key:
            return current
        _SLOT.clear()
        from peft import get_peft_model

        start = time.perf_counter()
        base = load_base_model(
            settings.model.name,
            family,
            dtype=settings.model.dtype,
            quantization=settings.model.quantization,
            num_labels=len(labels) if head else None,
            id2label=dict(enumerate(labels)) if head else None,
            attn_implementation=settings.model.attn_implementation,
            gradient_checkpointing=settings.model.gradient_checkpointing,
            head=head or "token",
            cache_dir=cache_dir,
        )
        missing = missing_target_modules(base, settings.target_modules)
        if missing:
            raise ConfigError([f"key 'lora.target-modules' = {settings['lora.target-modules']!r}: {missing} match "
                               f"no module of {settings.model.name}"])
        model = get_peft_model(base, lora_config(settings, head))
        tokenizer = load_tokenizer(settings.model.name, family)
        _LOADS += 1
        _LOAD_SECONDS += time.perf_counter() - start
        LOG.info("loaded base model %s (%s) into this process (load #%d)", settings.model.name, family, _LOADS)
        resident = Resident(model=model, tokenizer=tokenizer, family=family, labels=tuple(labels), key=key)
        _SLOT["model"] = resident
        return resident
