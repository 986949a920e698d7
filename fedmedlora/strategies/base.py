"""What every fedmedlora strategy adds to a Flower strategy, whatever its aggregation rule.

`LoraStrategyMixin` goes in front of a Flower strategy class (`class X(LoraStrategyMixin, FedAvg)`):
- the server keeps the global adapter in float32 and sends it in `strategy.wire-dtype` (float16 by default). The
  Flower parent builds its messages (and FedOpt/FedAvgM keep their copy of the global arrays) from the float32
  arrays; only the outgoing messages are cast;
- each round's training config carries the round's learning rate and the wire dtype (FedProx adds its mu);
- replies are screened before aggregation (here, and nowhere else): error replies, missing metrics, missing/extra
  keys, wrong shapes, non-float dtypes and NaN/Inf exclude a client with a logged reason. Usable replies are widened
  to float32, put in the global key order and trimmed to the metric keys they all share, so Flower's own
  `_check_and_log_replies` accepts them. A round with fewer usable replies than `strategy.min-replies` leaves the
  global adapter unchanged and says so;
- per-client metrics, exclusions, failure/exclusion counts and the array bytes sent and received are recorded for
  metrics.jsonl.
Subclasses implement `aggregate_usable` (or inherit the Flower parent's aggregation through it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from ..adapter import WIRE_DTYPES, from_array_record, record_nbytes, to_array_record
from ..aggregation.screening import state_problem
from ..results import RunRecorder
from ..settings import Settings

LOG = logging.getLogger(__name__)

WEIGHT_KEYS = {"examples": "num-examples", "tokens": "num-tokens"}
_WIRE_DTYPE_NAMES = {np.dtype(d) for d in WIRE_DTYPES.values()}


def announce(message: str, level: int = logging.INFO) -> None:
    """A line for the console (Flower shows the ServerApp's stdout) and the log."""
    LOG.log(level, message)
    print(f"[fedmedlora] {message}", flush=True)


def flower_sampling_kwargs(settings: Settings, weight_by: str) -> dict[str, Any]:
    """Flower's sampling arguments for 'k sites a round out of data.num-sites', and the weight metric."""
    sites, per_round = settings.data.num_sites, settings.clients_per_round
    eval_fraction = settings.evaluate.fraction
    return {
        "fraction_train": per_round / sites,
        "min_train_nodes": per_round,
        "fraction_evaluate": eval_fraction,
        "min_evaluate_nodes": max(1, int(eval_fraction * sites)) if eval_fraction > 0 else 0,
        "min_available_nodes": sites,
        "weighted_by_key": WEIGHT_KEYS[weight_by],
        "train_metrics_aggr_fn": aggregate_client_metrics,
        "evaluate_metrics_aggr_fn": aggregate_client_metrics,
    }


def _metrics_of(msg: Message) -> dict[str, Any]:
    records = list(msg.content.metric_records.values())
    return dict(records[0]) if len(records) == 1 else {}


def client_weights(replies: list[Message], weight_key: str) -> list[float]:
    return [float(_metrics_of(m)[weight_key]) for m in replies]


def node_of(msg: Message) -> int:
    return int(msg.metadata.src_node_id)


def client_label(msg: Message) -> str:
    """'site k' when the reply says which site it is (node ids are long random numbers in a simulation)."""
    site = _metrics_of(msg).get("site") if msg.has_content() else None
    return f"site {int(site)}" if isinstance(site, (int, float)) else f"node {node_of(msg)}"


# Client metrics that are per-client facts, not quantities to average across clients.
_NOT_AVERAGED = {"site", "model-loads", "num-examples", "num-tokens", "train-examples-seen", "train-tokens-seen",
                 "train-steps"}


def aggregate_client_metrics(records: list[Any], weight_key: str) -> MetricRecord:
    """Weighted means of the clients' metrics (loss, seconds, ...) and sums of their counts."""
    metrics = [dict(next(iter(r.metric_records.values()))) for r in records]
    weights = [float(m[weight_key]) for m in metrics]
    total = sum(weights)
    out: dict[str, float] = {}
    for key in metrics[0]:
        values = [m.get(key) for m in metrics]
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        if key == "site":
            continue
        if key in _NOT_AVERAGED:
            out[key] = float(sum(values)) if key != "model-loads" else float(max(values))
        else:
            out[key] = sum(w * v for w, v in zip(weights, values)) / total
    return MetricRecord(out)


class LoraStrategyMixin:
    settings: Settings
    recorder: RunRecorder
    global_keys: dict[str, tuple[int, ...]]

    def setup_lora(self, settings: Settings, recorder: RunRecorder, initial_state: dict[str, np.ndarray]) -> None:
        self.settings = settings
        self.recorder = recorder
        self.global_keys = {k: tuple(v.shape) for k, v in initial_state.items()}
        self.totals = {"failures": 0, "exclusions": 0}
        # every metrics.jsonl line carries the counters, the initial evaluation's (round 0) too
        recorder.round(0).update({"failures": 0, "exclusions": 0, "total-failures": 0, "total-exclusions": 0})

    # --- sending -------------------------------------------------------------------------------------------------
    def _to_wire(self, messages: Iterable[Message], server_round: int, phase: str) -> list[Message]:
        messages = list(messages)
        if not messages:
            return messages
        wire = to_array_record(from_array_record(messages[0].content["arrays"]), self.settings.strategy.wire_dtype)
        for msg in messages:
            msg.content["arrays"] = wire
        self.recorder.add_comm(server_round, phase, sent_bytes=record_nbytes(wire) * len(messages))
        self.recorder.round(server_round)[f"{phase}-nodes"] = [m.metadata.dst_node_id for m in messages]
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any):
        config = ConfigRecord(dict(config))
        config["learning-rate"] = self.settings.learning_rate(server_round)
        config["wire-dtype"] = self.settings.strategy.wire_dtype
        messages = super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]
        return self._to_wire(messages, server_round, "train")

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any):
        messages = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return self._to_wire(messages, server_round, "evaluate")

    # --- receiving -----------------------------------------------------------------------------------------------
    def screen_reply(self, msg: Message) -> tuple[dict[str, np.ndarray] | None, str | None]:
        """(the reply's adapter as float32 in global key order, None), or (None, why it cannot be aggregated)."""
        if msg.has_error():
            return None, f"client error: {msg.error.reason}"
        content = msg.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            return None, "expected one ArrayRecord and one MetricRecord"
        array_key = getattr(self, "arrayrecord_key", "arrays")
        if array_key not in content.array_records:
            return None, f"the ArrayRecord is not under '{array_key}'"
        weight_key = self.weighted_by_key  # type: ignore[attr-defined]
        weight = _metrics_of(msg).get(weight_key)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
            return None, f"metric '{weight_key}' missing or not a positive number: {weight!r}"
        raw = {k: a.numpy() for k, a in content[array_key].items()}
        problem = state_problem(raw, self.global_keys)
        if problem is not None:
            return None, problem
        for key, array in raw.items():
            if array.dtype not in _WIRE_DTYPE_NAMES:
                return None, f"{key!r}: dtype {array.dtype}, expected float16 or float32"
        return {k: np.asarray(raw[k], dtype=np.float32) for k in self.global_keys}, None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        log = self.recorder.round(server_round)
        clients: list[dict[str, Any]] = []
        usable: list[Message] = []
        received = 0
        log.update({"replies": len(replies), "usable": 0, "failures": 0, "exclusions": 0, "excluded": [],
                    "clients": clients})
        for msg in replies:
            if msg.has_content():
                received += sum(record_nbytes(r) for r in msg.content.array_records.values())
            state, reason = self.screen_reply(msg)
            clients.append({"node": node_of(msg), **(_metrics_of(msg) if msg.has_content() else {})})
            if state is None:
                self.exclude(server_round, node_of(msg), reason or "unusable", failure=msg.has_error())
            else:
                msg.content["arrays"] = to_array_record(state, "float32")
                usable.append(msg)
        replied = {node_of(m) for m in replies}
        for node in log.get("train-nodes", []):  # Flower drops replies that come after the round timeout
            if node not in replied:
                self.exclude(server_round, int(node), "no reply within strategy.round-timeout = "
                             f"{self.settings.strategy.round_timeout:g} s", failure=True)
        self.recorder.add_comm(server_round, "train", received_bytes=received)
        log["usable"] = len(usable)
        _shared_metric_keys(usable)
        if not self.enough_replies(server_round, len(usable)):
            return None, None
        arrays, metrics = self.aggregate_usable(server_round, usable)
        log["aggregated"] = arrays is not None
        if metrics is not None:
            log["train-aggregated"] = dict(metrics)
        if arrays is not None:
            arrays = to_array_record(from_array_record(arrays), "float32")  # the master copy stays float32
        log["total-failures"] = self.totals["failures"]
        log["total-exclusions"] = self.totals["exclusions"]
        return arrays, metrics

    def exclude(self, server_round: int, node: int, reason: str, failure: bool = False) -> None:
        """Leave one client out of this round's aggregate, with its reason, counted in metrics.jsonl.

        failure: an error reply or no reply (counted in `failures`); otherwise a reply screened out (`exclusions`).
        """
        log = self.recorder.round(server_round)
        reason = reason if len(reason) <= 2000 else reason[:2000] + " [...]"  # tracebacks stay readable
        log["excluded"].append({"node": node, "reason": reason})
        counter = "failures" if failure else "exclusions"
        log[counter] += 1
        self.totals[counter] += 1
        for entry in log.get("clients", []):
            if entry["node"] == node:
                entry["excluded"] = reason
        log["total-failures"] = self.totals["failures"]
        log["total-exclusions"] = self.totals["exclusions"]
        first_line = reason.splitlines()[0] if reason else reason
        announce(f"round {server_round}: node {node} left out of the aggregate: {first_line}", logging.WARNING)

    def enough_replies(self, server_round: int, usable: int) -> bool:
        """True if `usable` replies may be aggregated; otherwise record and say that the adapter stays as it was."""
        log = self.recorder.round(server_round)
        log["usable"] = usable
        if usable >= self.settings.strategy.min_replies:
            return True
        log["aggregated"] = False
        log["total-failures"] = self.totals["failures"]
        log["total-exclusions"] = self.totals["exclusions"]
        announce(f"round {server_round}: {usable} usable replies (strategy.min-replies = "
                 f"{self.settings.strategy.min_replies}): the global adapter stays as it was", logging.WARNING)
        return False

    def aggregate_usable(self, server_round: int, replies: list[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate screened float32 replies; by default the Flower parent's rule."""
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        ok = [m for m in replies if m.has_content()]
        self.recorder.round(server_round)["evaluate-clients"] = [
            {"node": m.metadata.src_node_id, **_metrics_of(m)} if m.has_content()
            else {"node": m.metadata.src_node_id, "error": m.error.reason} for m in replies]
        metrics = super().aggregate_evaluate(server_round, ok)  # type: ignore[misc]
        if metrics is not None:
            self.recorder.round(server_round)["evaluate-aggregated"] = dict(metrics)
        return metrics


def _shared_metric_keys(replies: list[Message]) -> None:
    """Keep only the metric keys every usable reply has: Flower's parents refuse replies whose keys differ."""
    if len(replies) < 2:
        return
    shared = set.intersection(*(set(_metrics_of(m)) for m in replies))
    for msg in replies:
        key = next(iter(msg.content.metric_records))
        metrics = _metrics_of(msg)
        if set(metrics) != shared:
            msg.content[key] = MetricRecord({k: v for k, v in metrics.items() if k in shared})
