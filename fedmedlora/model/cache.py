"""This machine's model cache: where models built or converted offline live (`FEDMEDLORA_CACHE`, else
`$XDG_CACHE_HOME/fedmedlora`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("FEDMEDLORA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fedmedlora"
    )
    return Path(root)
