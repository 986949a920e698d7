"""A base model as this run loads it (quantized to 4/8-bit, or cast to another dtype), saved once on the site's disk.

Loading an 8B base in 4-bit re-reads its 16 GB of bf16 weights and quantizes them, and a deployed site does that for
every message (Flower 1.42 runs one ClientApp process per message). So the first load saves the converted model
(`save_pretrained`: bitsandbytes' serialized 4-bit layers, or the cast weights, as safetensors) under a name derived
from the source's content and the conversion, and later loads read that folder: safetensors are memory-mapped, and
nothing is quantized again. A base loaded as stored (the default MiniLM in float32) is not copied: it is already
read memory-mapped from its own files.

The source's content: a hub id's snapshot commit (the Hugging Face cache is content-addressed), or a local folder's
files' sha256, remembered per (path, size, mtime) in the cache so a 16 GB folder is hashed once per machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..local_cache import digest, published, sha256_of_file

DIGEST_INDEX = "file-digests.json"
_HITS = [0]


def note_load(hit: bool) -> None:
    _HITS[0] += int(hit)


def cache_hits() -> int:
    """How many base-model loads in this process read a converted copy from the cache."""
    return _HITS[0]


def stored_dtype(config: Any) -> str:
    """The dtype the checkpoint's weights are stored in (float32 when the config does not say)."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    return str(value).replace("torch.", "")


def needs_conversion(config: Any, dtype: str, quantization: int) -> bool:
    return bool(quantization) or stored_dtype(config) != dtype


def _folder_content(folder: Path, root: Path) -> list[tuple[str, int, str]]:
    """(relative path, size, sha256) of every file, hashing only files not hashed before on this machine."""
    from filelock import FileLock

    index_path = root / DIGEST_INDEX
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(index_path) + ".lock"):
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        content = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in index:
                index[key] = sha256_of_file(path)
            content.append((str(path.relative_to(folder)), stat.st_size, index[key]))
        tmp = index_path.with_name(f"{DIGEST_INDEX}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, index_path)
    return content


def source_content(source: str, root: Path) -> Any:
    """What identifies the weights `source` names: a folder's file digests, or a hub snapshot's commit."""
    if os.path.isdir(source):
        return _folder_content(Path(source), root)
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(repo_id=source, local_files_only=True))
    return [source, snapshot.name]  # .../snapshots/<commit>


def converted_entry(root: Path, source: str, family: str, head: str, labels: list[str], dtype: str,
                    quantization: int) -> Path:
    key = digest("base", source_content(source, root), family, head, list(labels), dtype, quantization)
    return Path(root) / "models" / key


def load_converted(entry: Path, load: Any) -> tuple[Any, bool]:
    """(the model, True if read from the cache): `load(path)` loads weights from `path`, converting them;
    the first call loads the source (`load(None)`) and saves the result under `entry`."""
    built: list[Any] = []

    def save(folder: Path) -> None:
        model = load(None)
        model.save_pretrained(str(folder))
        built.append(model)

    entry, hit = published(entry, save)
    if built:
        return built[0], False
    return load(str(entry)), hit
