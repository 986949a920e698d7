"""Shared test settings: the embedded default and the instruct track, shrunk to seconds."""

from __future__ import annotations

# The embedded default, shrunk to seconds: same model, task, data and code paths.
TINY_NER = {
    "num-server-rounds": 2,
    "data.max-train-examples": 48,
    "data.max-eval-examples": 24,
    "train.local-steps": 3,
    "train.batch-size": 8,
}

TINY_INSTRUCT = {
    "num-server-rounds": 2,
    "data.task": "instruct",
    "data.datasets": "medquad",
    "data.num-sites": 2,
    "data.max-length": 96,
    "data.max-train-examples": 32,
    "data.max-eval-examples": 8,
    "model.name": "builtin:tiny-llama-micro",
    "lora.target-modules": "q_proj,v_proj",
    "train.local-steps": 3,
    "train.batch-size": 4,
    "train.learning-rate-max": 3e-3,
    "train.learning-rate-min": 3e-3,
    "evaluate.batch-size": 8,
}
