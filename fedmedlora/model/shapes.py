"""Shapes of the seeds' base models, from their published configs: built on the meta device, nothing downloaded.

Used to check the GPU presets' adapters and to count their communication where the weights cannot be had.
"""

from __future__ import annotations

from typing import Any


def llama3_8b_config() -> Any:
    """Llama-3-8B's shape (Bio-Medical-Llama-3-8B, Llama-3.1-8B)."""
    import transformers

    return transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
