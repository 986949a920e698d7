"""Test environment: offline, quiet, and a shared cache for the models built offline."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def smollm2_folder():
    """The pretrained SmolLM2-135M-Instruct (builtin:smollm2-135m), converted from its GGUF once per machine (about
    half a minute the first time; the model cache keeps it) and shared by every test that needs a real LM."""
    from pathlib import Path

    from fedmedlora.model.loading import resolve_model_source

    return Path(resolve_model_source("builtin:smollm2-135m"))
