"""What a ClientApp message costs besides its work: process start, base-model load, site data, per message.

Flower's simulation keeps ClientApp workers alive for the whole run (the base model stays resident). A Flower 1.42
deployment runs every message in a fresh `flwr-clientapp` process that serves exactly one message and exits;
Flower 1.42 keeps processes warm only for its agent/model/connector tasks on Kubernetes, not for ClientApps. So
every reply says which process served it and what that process paid before the work:

- `pid`, `process-messages` (this message's number in its process: 1 = a fresh process);
- `startup-seconds`: process creation to the handler, for the first message of a process (interpreter, imports,
  Flower fetching the message), else 0;
- `model-loaded` (0 or 1), `model-load-seconds` and `model-from-cache` (1 when a converted base was read back from
  the site's cache, model/base_cache.py): the base model loaded for this message;
- `data-seconds` and `data-from-cache`: building the site's rows and tokenized split (1 when read from the site's
  disk cache or kept in memory);
- `handler-seconds`: the whole handler.

The server sums these per site and per round (`ProcessLedger`, in metrics.jsonl and summary.json), so "base-model
loads per site" counts loads, not processes, and a round's share spent outside training is measured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..model.base_cache import cache_hits
from ..model.resident import base_model_load_seconds, base_model_loads

_MESSAGES = 0


def _process_created() -> float:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # psutil missing or /proc unreadable: count from the first message instead
        return time.time()


_CREATED = _process_created()


class MessageClock:
    """Started when a handler starts; `metrics()` gives the figures above for its reply."""

    def __init__(self) -> None:
        global _MESSAGES
        _MESSAGES += 1
        self.number = _MESSAGES
        self.started = time.time()
        self.loads = base_model_loads()
        self.load_seconds = base_model_load_seconds()
        self.cache_hits = cache_hits()
        self.data_seconds = 0.0
        self.data_from_cache = 1

    def data(self, seconds: float, from_cache: bool) -> None:
        self.data_seconds += seconds
        self.data_from_cache = int(self.data_from_cache and from_cache)

    def metrics(self) -> dict[str, float]:
        return {
            "pid": os.getpid(),
            "process-messages": self.number,
            "startup-seconds": max(self.started - _CREATED, 0.0) if self.number == 1 else 0.0,
            "model-loaded": base_model_loads() - self.loads,
            "model-load-seconds": base_model_load_seconds() - self.load_seconds,
            "model-from-cache": cache_hits() - self.cache_hits,
            "data-seconds": self.data_seconds,
            "data-from-cache": self.data_from_cache,
            "handler-seconds": time.time() - self.started,
        }


PER_SITE = ("messages", "processes", "model-loads", "model-load-seconds", "startup-seconds", "data-seconds",
            "train-seconds", "handler-seconds")


class ProcessLedger:
    """The server's sums of the figures above, per site over the run and over each round."""

    def __init__(self) -> None:
        self.sites: dict[str, dict[str, Any]] = {}
        self._pids: dict[str, set[int]] = {}

    def add(self, site: str, metrics: Mapping[str, Any]) -> None:
        if "pid" not in metrics:
            return
        entry = self.sites.setdefault(site, {key: 0 for key in PER_SITE})
        pids = self._pids.setdefault(site, set())
        entry["messages"] += 1
        pids.add(int(metrics["pid"]))
        entry["processes"] = len(pids)
        entry["model-loads"] += int(metrics.get("model-loaded", 0))
        for key in ("model-load-seconds", "startup-seconds", "data-seconds", "train-seconds", "handler-seconds"):
            entry[key] += float(metrics.get(key, 0.0))

    @staticmethod
    def round_figures(replies: Iterable[Mapping[str, Any]], round_seconds: float) -> dict[str, float]:
        """One round's messages: fresh processes, load and startup seconds, and the share outside training."""
        replies = [r for r in replies if "pid" in r]
        slowest_training = max((float(r.get("train-seconds", 0.0)) for r in replies), default=0.0)
        return {
            "messages": len(replies),
            "process-starts": sum(int(r.get("process-messages", 0)) == 1 for r in replies),
            "startup-seconds": sum(float(r.get("startup-seconds", 0.0)) for r in replies),
            "model-loads": sum(int(r.get("model-loaded", 0)) for r in replies),
            "model-load-seconds": sum(float(r.get("model-load-seconds", 0.0)) for r in replies),
            "data-seconds": sum(float(r.get("data-seconds", 0.0)) for r in replies),
            "round-seconds": round_seconds,
            "slowest-training-seconds": slowest_training,
            "share-outside-training": 1.0 - slowest_training / round_seconds if round_seconds > 0 else 0.0,
        }
