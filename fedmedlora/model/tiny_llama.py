"""An offline causal LM: a small Llama built from a config, with a BPE tokenizer trained on bundled text.

No causal LM can be downloaded on machines without the Hugging Face Hub, so the generative track runs on this model
offline. It is deterministic: the tokenizer is trained on a fixed, ordered corpus (MedQuAD questions and answers
plus NCBI-disease sentences) and the weights are drawn from a seeded generator. It is built once per machine into a
cache folder (under a file lock, so parallel Ray workers build it once) and loaded from there like any local model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fedmedlora_data import data_path

from ..local_cache import machine_cache_root as cache_root


@dataclass(frozen=True)
class TinyLlamaSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 1024
    seed: int = 0
    corpus_rows: int = 6000  # MedQuAD rows the tokenizer is trained on (a fixed prefix of a fixed order)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# Names usable as `model.name = "builtin:<name>"`.
SPECS: dict[str, TinyLlamaSpec] = {
    # ~7 M parameters: the generative preset on CPU.
    "tiny-llama": TinyLlamaSpec(
        vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4
    ),
    # ~0.6 M parameters: fast tests.
    "tiny-llama-micro": TinyLlamaSpec(
        vocab_size=2048, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        corpus_rows=2000,
    ),
}

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


def _corpus(spec: TinyLlamaSpec) -> list[str]:
    """The tokenizer's training text, in a fixed order."""
    texts: list[str] = []
    with gzip.open(data_path("instruct", "medquad", "medquad.jsonl.gz"), "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= spec.corpus_rows:
                break
            row = json.loads(line)
            texts.append(row["question"])
            texts.append(row["answer"])
    with gzip.open(data_path("ner", "ncbi_disease", "train.tsv.gz"), "rt", encoding="utf-8") as fh:
        words: list[str] = []
        for line in fh:
            line = line.rstrip("\n")
            if line:
                words.append(line.split("\t")[0])
            elif words:
                texts.append(" ".join(words))
                words = []
    return texts


def _build(spec: TinyLlamaSpec, out_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=spec.max_position_embeddings
    )
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)


def ensure_built(name: str) -> Path:
    """Folder of the built-in model `name` (see SPECS), building it first if this machine has none."""
    from filelock import FileLock

    if name not in SPECS:
        raise ValueError(f"unknown built-in model 'builtin:{name}'; built-in causal models: {sorted(SPECS)}")
    spec = SPECS[name]
    out_dir = cache_root() / f"{name}-{spec.digest()}"
    done = out_dir / "BUILT"
    if done.exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if not done.exists():
            tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            _build(spec, tmp)
            (tmp / "BUILT").write_text(json.dumps(asdict(spec)))
            if out_dir.exists():  # a half-built folder from a killed build
                import shutil

                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
    return out_dir


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or list(SPECS):
        print(ensure_built(arg))
