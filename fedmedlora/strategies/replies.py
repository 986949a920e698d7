"""A client reply as the strategies see it once screened (`Reply`), the helpers that read a raw reply, and the
console line every strategy announces with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Message, MetricRecord

from ..reply_contract import METRICS, TRAIN_METRICS, allowed_metrics

LOG = logging.getLogger("fedmedlora.strategies")

State = dict[str, np.ndarray]


def announce(message: str, level: int = logging.INFO) -> None:
    """A line for the console (Flower shows the ServerApp's stdout) and the log."""
    LOG.log(level, message)
    print(f"[fedmedlora] {message}", flush=True)


def metrics_of(msg: Message, allowed: frozenset[str] = TRAIN_METRICS) -> dict[str, Any]:
    """The reply's metrics the server keeps: allowed names with numbers as values (reply_contract.py)."""
    record = msg.content.get(METRICS) if msg.has_content() else None
    return allowed_metrics(dict(record), allowed)[0] if isinstance(record, MetricRecord) else {}


def node_of(msg: Message) -> int:
    return int(msg.metadata.src_node_id)


@dataclass
class Reply:
    """A usable client reply, decoded once: its adapter (float32, global key order) and metrics."""

    node: int
    state: State
    metrics: dict[str, Any]
    message: Message

    @property
    def label(self) -> str:
        """'site k' when the reply says which site it is (node ids are long random numbers in a simulation)."""
        site = self.metrics.get("site")
        return f"site {int(site)}" if isinstance(site, (int, float)) else f"node {self.node}"
