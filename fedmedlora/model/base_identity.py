"""Which base model an adapter belongs to: recorded in every checkpoint, compared before an adapter is applied.

A LoRA adapter only fits the base it was trained on. Names do not say whether two bases are the same
(`builtin:smollm2-135m`, the folder it is converted into and the `.gguf` file it comes from are one model under three
names), so a base is identified by architecture facts from its config: model type, width, depth, heads, feed-forward
size and vocabulary (`base_fingerprint`). Every `peft_<round>/` records them in `fedmedlora.json` (next to the base's
name, `checkpoint_info`); a plain PEFT folder names its base in `adapter_config.json` (`base_model_name_or_path`),
whose config is read when it is available offline. `adapter_base_problem` says, before any weights load, why an
adapter does not fit a base, naming both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "vocab_size")


def base_fingerprint(config: Any) -> dict[str, Any]:
    """The architecture facts of a config that an adapter's shapes and keys depend on."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    fingerprint = {}
    for key in FINGERPRINT_KEYS:
        value = getattr(text, key, None)
        if value is None and key == "model_type":
            value = getattr(config, key, None)
        fingerprint[key] = value
    return fingerprint


def describe(fingerprint: dict[str, Any]) -> str:
    parts = [str(fingerprint.get("model_type"))]
    labels = {"hidden_size": "hidden", "num_hidden_layers": "layers", "num_attention_heads": "heads",
              "num_key_value_heads": "kv heads", "intermediate_size": "ffn", "vocab_size": "vocab"}
    parts += [f"{label} {fingerprint[key]}" for key, label in labels.items() if fingerprint.get(key) is not None]
    return ", ".join(parts)


def base_record(model_name: str) -> dict[str, Any]:
    """What a checkpoint records about its base: the name as configured and the architecture facts."""
    from .loading import load_config

    return {"base-model": model_name, "base-model-config": base_fingerprint(load_config(model_name))}


def recorded_base(peft_path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(base name, fingerprint) an adapter folder records; the fingerprint of a name-only record is read from that
    base's config when it loads offline, else None (nothing to compare)."""
    folder = Path(peft_path)
    info = _read_json(folder / "fedmedlora.json")
    name = info.get("base-model")
    fingerprint = info.get("base-model-config")
    if not name:
        name = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    if fingerprint is None and name:
        fingerprint = _fingerprint_if_available(name)
    return name, fingerprint


def adapter_base_problem(peft_path: str | Path, base_name: str, base_config: Any) -> str | None:
    """Why the adapter in `peft_path` does not fit the base `base_name` (whose config is `base_config`), or None."""
    name, recorded = recorded_base(peft_path)
    if recorded is None:
        return None
    actual = base_fingerprint(base_config)
    differing = [k for k in FINGERPRINT_KEYS if recorded.get(k) is not None and recorded.get(k) != actual.get(k)]
    if not differing:
        return None
    return (f"the adapter {peft_path} was trained on base model {name!r} ({describe(recorded)}), but the base given "
            f"is {base_name!r} ({describe(actual)}); they differ in {', '.join(differing)}. Score the adapter with "
            "the base it was trained on")


def _fingerprint_if_available(name: str) -> dict[str, Any] | None:
    from .loading import load_config

    try:
        return base_fingerprint(load_config(name))
    except (ValueError, OSError):  # a hub id that is not cached, offline: nothing to compare with
        return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
