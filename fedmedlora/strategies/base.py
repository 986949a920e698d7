"""What every fedmedlora strategy adds to a Flower strategy, whatever its aggregation rule.

`LoraStrategyMixin` goes in front of a Flower strategy class (`class X(LoraStrategyMixin, FedAvg)`):
- the server keeps the global adapter in float32 and sends its shared tensors (all of them, unless the strategy's
  `key_scheme` keeps some at the sites: aggregation/key_roles.py) in `strategy.wire-dtype`, encoded once per round:
  float16 (the default) or float32 values, or int8/int4 quantized differences from the initial adapter (wire.py,
  docs/wire-formats.md). The Flower parent builds its messages (and FedOpt/FedAvgM keep their copy of the global
  arrays) from the float32 record; only the outgoing messages carry the wire copy. Clients read the wire format
  from the run config; the round's training config carries its learning rate (and FedProx's mu, and the initial
  adapter's fingerprint when sites need that adapter);
- replies are screened and decoded once, here and nowhere else: error replies, missing metrics, missing/extra keys,
  wrong shapes, non-float dtypes or another wire format, and NaN/Inf exclude a client with a logged reason. Usable
  replies become `Reply`s (float32 state in the global key order, metrics; an int8/int4 update is added to the
  float32 master copy of what the node was sent) that the rule (`aggregate_replies`) combines; the aggregate,
  completed with the tensors that did not travel, is encoded once. A round with fewer usable replies than
  `strategy.min-replies` leaves the global adapter unchanged and says so;
- usable replies then pass the guards of reply_guards.py (agreed content, weight cap, norm bound, privacy);
- per-client metrics, exclusions and the array bytes sent and received are recorded for metrics.jsonl (the recorder
  keeps the running totals);
- rounds go on with whoever is connected: each phase waits at most `strategy.node-wait` seconds for
  `strategy.min-replies` nodes and samples `clients-per-round` of those connected (availability.py); each instruction
  sent gets exactly one outcome (a reply, an error reply or none), attributed to the node it was sent to (outcomes.py);
- `state_dict` / `load_state`: what the strategy carries from round to round beyond the global adapter (none here;
  Flower's server optimisers override them), saved after every round so a killed run resumes exactly.

A strategy owns its specifics as class attributes and hooks: `keys` (the strategy-specific run-config keys it reads),
`product` (whether `strategy.lora-aggregation = "product"` applies), `key_scheme` (which tensors travel),
`settings_problems` (its cross-key rules, checked with the run config), `flower_arguments` (its Flower constructor
arguments from the settings), `setup` (set-up that needs the job, e.g. Fed-MedLoRA+'s validation set), and for
strategies whose nodes differ (FlexLoRA's ranks) `wire_record_for`, `reply_layout` and `reply_base`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from ..aggregation.hetero_rank import truncate
from ..aggregation.key_roles import SHARED, keys_with_role
from ..aggregation.screening import state_problem
from ..recorder import RunRecorder
from ..reply_contract import ARRAYS, EVALUATE_METRICS, METRICS, TRAIN_METRICS, kept_error_reason
from ..settings import Settings
from ..wire import (QUANTIZED_BITS, WIRE_NUMPY_DTYPES, array_values, from_array_record, is_quantized,
                    quantized_stype, record_nbytes, state_digest, to_array_record)
from .availability import NodeSnapshot, OnlyNodes, connected_nodes
from .outcomes import match_replies
from .replies import Reply, State, announce, metrics_of, node_of  # noqa: F401  (re-exported)
from .reply_guards import ReplyGuards
from .site_counts import SiteCounts

LOG = logging.getLogger(__name__)

WEIGHT_KEYS = {"examples": "num-examples", "tokens": "num-tokens"}


def flower_sampling_kwargs(settings: Settings, weight_by: str) -> dict[str, Any]:
    """Flower's sampling arguments for 'k sites a round out of data.num-sites', and the weight metric.

    The node minimums are caps: each phase lowers them to the nodes connected then (`LoraStrategyMixin.snapshot`),
    and a round needs only `strategy.min-replies` nodes, not every site (a lost site must not hang the run).
    """
    sites, per_round = settings.data.num_sites, settings.clients_per_round
    return {
        "fraction_train": per_round / sites,
        "min_train_nodes": per_round,
        # Flower's evaluate phase averages client metrics; evaluation merges the sites' counts instead, in the
        # ServerApp's round end (federation/evaluation.py), so the strategy's own phase stays off.
        "fraction_evaluate": 0.0,
        "min_evaluate_nodes": 0,
        "min_available_nodes": settings.strategy.min_replies,
        "weighted_by_key": WEIGHT_KEYS[weight_by],
        "train_metrics_aggr_fn": aggregate_client_metrics,
        "evaluate_metrics_aggr_fn": aggregate_client_metrics,
    }


# Client metrics that are per-client facts, not quantities to average across clients (summed, or the largest), and
# those that only identify a client (federation/process_stats.py: which process served it).
_NOT_AVERAGED = {"site", "model-loads", "num-examples", "num-tokens", "train-examples-seen", "train-tokens-seen",
                 "train-steps", "model-loaded", "model-load-seconds", "startup-seconds", "data-seconds",
                 "dp-epsilon", "dp-noise-multiplier", "lora-rank", "site-rounds-kept"}
# facts of which the largest is the one worth keeping
_LARGEST = {"model-loads", "dp-epsilon", "dp-noise-multiplier", "lora-rank", "site-rounds-kept"}
_NOT_AGGREGATED = {"site", "pid", "process-messages", "data-from-cache", "model-from-cache"}


def combine_client_metrics(metrics: list[dict[str, Any]], weight_key: str) -> dict[str, float]:
    """Weighted means of the clients' metrics (loss, seconds, ...) and sums of their counts, over the keys all share."""
    weights = [float(m[weight_key]) for m in metrics]
    total = sum(weights)
    shared = set.intersection(*(set(m) for m in metrics)) if metrics else set()
    out: dict[str, float] = {}
    for key in metrics[0] if metrics else []:
        values = [m.get(key) for m in metrics]
        if key not in shared or key in _NOT_AGGREGATED or not all(isinstance(v, (int, float)) for v in values):
            continue
        if key in _NOT_AVERAGED:
            out[key] = float(max(values)) if key in _LARGEST else float(sum(values))
        else:
            out[key] = sum(w * v for w, v in zip(weights, values)) / total
    return out


def aggregate_client_metrics(records: list[Any], weight_key: str) -> MetricRecord:
    """Flower's `*_metrics_aggr_fn` signature over `combine_client_metrics`."""
    return MetricRecord(combine_client_metrics([dict(next(iter(r.metric_records.values()))) for r in records],
                                               weight_key))


class LoraStrategyMixin(ReplyGuards):
    keys: ClassVar[tuple[str, ...]] = ()
    product: ClassVar[bool] = False
    needs_validation_set: ClassVar[bool] = False  # set-up reads validation rows the server holds (job.sites' val)
    key_scheme: ClassVar[str] = "all"  # which adapter tensors travel (aggregation/key_roles.py)
    settings: Settings
    recorder: RunRecorder
    global_keys: dict[str, tuple[int, ...]]

    # --- what a strategy owns --------------------------------------------------------------------------------------
    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        """Problems of the run config that only this strategy has (checked before any model is loaded)."""
        return []

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        """Arguments of the Flower parent's constructor that come from this strategy's keys."""
        return {}

    def setup(self, job: Any) -> dict[str, Any]:
        """Set-up that needs the job; returns what strategy.json should say of it."""
        return {}

    # --- set-up ----------------------------------------------------------------------------------------------------
    def setup_lora(self, settings: Settings, recorder: RunRecorder, initial_state: State,
                   counts: SiteCounts | None = None) -> None:
        """`counts`: what the server holds of each site, for `strategy.weight-cap` (site_counts.py)."""
        self.settings = settings
        self.recorder = recorder
        self.initial_state = initial_state  # frozen tensors stay at it; int8/int4 downlinks are relative to it
        shared = keys_with_role(initial_state, self.key_scheme, SHARED)
        self.global_keys = {k: tuple(initial_state[k].shape) for k in shared}  # what travels, and is screened
        self._wire: tuple[ArrayRecord, ArrayRecord] | None = None  # (float32 global, its wire copy)
        self._sent: dict[str, list[Message]] = {}  # the instructions of the current phase, by phase
        self._caps = {"train": self.min_train_nodes, "evaluate": self.min_evaluate_nodes}  # type: ignore[attr-defined]
        self.roster_nodes: set[int] | None = None  # None: every connected node may be sampled
        self._sent_arrays: ArrayRecord | None = None  # the wire copy this round's training started from
        self.counts = counts
        if counts is None and settings.strategy.weight_cap:
            announce("strategy.weight-cap: the server holds no site counts here; claimed weights are not capped",
                     logging.WARNING)
        self._global: tuple[ArrayRecord, State] | None = None  # (float32 global sent this round, decoded once)
        self.quantized = is_quantized(settings.strategy.wire_dtype)
        self.sites_need_reference = self.key_scheme != "all" or self.quantized
        self.reference_digest = state_digest(initial_state) if self.sites_need_reference else None

    # --- what carries over from round to round (resume) --------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON-able facts) this strategy carries into the next round besides the global adapter."""
        return {}, {}

    def load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """Take back what `state_dict` gave, when a run resumes."""

    # --- sending -------------------------------------------------------------------------------------------------
    def encode_global(self, state: State, rank: int | None = None) -> ArrayRecord:
        """What travels of a global adapter: its shared tensors in the wire dtype, or, int8/int4, their difference
        from the initial adapter (zero in round 1: sites draw the initial adapter themselves). `rank`: the state is
        that rank's truncation (heterogeneous ranks), and so is the initial adapter it is compared with."""
        s = self.settings.strategy
        shared = {k: state[k] for k in self.global_keys}
        if self.quantized:
            initial = self.initial_state if rank is None else truncate(self.initial_state, rank)
            shared = {k: v - initial[k] for k, v in shared.items()}
        return to_array_record(shared, s.wire_dtype, s.wire_block_size)

    def wire_record(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global adapter on the wire, encoded once per global adapter (not per phase or per client)."""
        if self._wire is None or self._wire[0] is not arrays:
            self._wire = (arrays, self.encode_global(from_array_record(arrays)))
        return self._wire[1]

    def wire_record_for(self, node: int, arrays: ArrayRecord) -> ArrayRecord:
        """What one node is sent: the same record for every node, unless a strategy says otherwise."""
        return self.wire_record(arrays)

    def node_rank(self, node: int) -> int | None:
        """A node's LoRA rank where ranks differ by node and the node has reported its own (FlexLoRA), else None."""
        return None

    def reply_layout(self, metrics: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The keys and shapes a reply must have: the shared tensors of the global adapter."""
        return self.global_keys

    def reply_base(self, metrics: dict[str, Any]) -> State:
        """What an int8/int4 reply's update is added to: the float32 master copy of what the node was sent."""
        return self.global_state()

    def global_state(self) -> State:
        """The float32 global adapter of this round (every key), decoded once."""
        if self._global is None:
            raise RuntimeError("no global adapter yet: configure_train has not run")
        return self._global[1]

    def _remember_global(self, arrays: ArrayRecord) -> None:
        if self._global is None or self._global[0] is not arrays:
            self._global = (arrays, from_array_record(arrays))

    def site_config(self, config: ConfigRecord) -> ConfigRecord:
        """The round's config, plus the initial adapter's fingerprint when sites need that adapter."""
        if self.reference_digest is not None:
            config["adapter-reference"] = self.reference_digest
        return config

    def _to_wire(self, messages: Iterable[Message], arrays: ArrayRecord, server_round: int, phase: str
                 ) -> list[Message]:
        messages = list(messages)
        if not messages:
            return messages
        sent = 0
        common = self.wire_record(arrays)
        for msg in messages:
            wire = self.wire_record_for(msg.metadata.dst_node_id, arrays)
            if wire is common:
                msg.content["arrays"] = wire
            else:  # Flower's messages share one RecordDict: a node's own record needs its own
                msg.content = RecordDict({**dict(msg.content.items()), "arrays": wire})
            sent += record_nbytes(wire)
        self.recorder.add_comm(server_round, phase, sent_bytes=sent)
        if phase == "train":
            self._sent_arrays = common
        self.recorder.round(server_round)[f"{phase}-nodes"] = [m.metadata.dst_node_id for m in messages]
        self._sent[phase] = messages  # the grid gives them their ids when it pushes them
        return messages

    def limit_to_nodes(self, nodes: Iterable[int]) -> None:
        """Sample only these nodes (the sites in the run's roster: a node that connects later described no site)."""
        self.roster_nodes = {int(n) for n in nodes}

    def snapshot(self, server_round: int, grid: Any, phase: str, wanted: int) -> NodeSnapshot | None:
        """The nodes connected now (waited for up to strategy.node-wait), with Flower's minimum for the phase capped
        at their number; None (recorded, announced) if fewer than `wanted` are connected after the wait."""
        self._sent[phase] = []
        source = OnlyNodes(grid, self.roster_nodes) if self.roster_nodes is not None else grid
        nodes = connected_nodes(source, wanted, self.settings.strategy.node_wait)
        self.recorder.round(server_round)[f"{phase}-connected"] = len(nodes)
        if len(nodes) < wanted:
            announce(f"round {server_round}: {len(nodes)} SuperNodes connected after waiting strategy.node-wait = "
                     f"{self.settings.strategy.node_wait:g} s, {wanted} needed: no {phase} this round",
                     logging.WARNING)
            return None
        setattr(self, f"min_{phase}_nodes", min(self._caps[phase], len(nodes)))  # what Flower samples at least
        return NodeSnapshot(grid, nodes)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any):
        config = ConfigRecord(dict(config))
        config["learning-rate"] = self.settings.learning_rate(server_round)
        self._remember_global(arrays)
        nodes = self.snapshot(server_round, grid, "train", self.settings.strategy.min_replies)
        if nodes is None:
            return []
        messages = super().configure_train(server_round, arrays, self.site_config(config), nodes)  # type: ignore[misc]
        return self._to_wire(messages, arrays, server_round, "train")

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any):
        if self.fraction_evaluate == 0.0:  # type: ignore[attr-defined]  # no federated evaluation: nothing to wait for
            self._sent["evaluate"] = []
            return []
        nodes = self.snapshot(server_round, grid, "evaluate", 1)
        if nodes is None:
            return []
        config = self.site_config(ConfigRecord(dict(config)))
        messages = super().configure_evaluate(server_round, arrays, config, nodes)  # type: ignore[misc]
        return self._to_wire(messages, arrays, server_round, "evaluate")

    # --- receiving -----------------------------------------------------------------------------------------------
    def screen_reply(self, server_round: int, msg: Message, node: int | None = None
                     ) -> tuple[Reply | None, str | None]:
        """(the reply decoded, None), or (None, why it cannot be aggregated); `msg` is stripped to agreed content;
        `node`: who was sent the instruction."""
        if msg.has_error():
            return None, f"client error: {kept_error_reason(msg.error.reason, self.settings.privacy.error_details)}"
        array_key = getattr(self, "arrayrecord_key", ARRAYS)
        self.keep_agreed_content(server_round, msg, TRAIN_METRICS, array_key)
        content = msg.content
        if array_key not in content.array_records:
            return None, f"no ArrayRecord under '{array_key}'"
        if METRICS not in content.metric_records:
            return None, f"no MetricRecord under '{METRICS}'"
        weight_key = self.weighted_by_key  # type: ignore[attr-defined]
        metrics = dict(content[METRICS])
        weight = metrics.get(weight_key)
        if not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
            return None, f"metric '{weight_key}' missing or not a positive number: {weight!r}"
        raw, problem = self.decode_arrays(content[array_key])
        layout = None
        if problem is None:
            try:
                layout = self.reply_layout(metrics)
            except ValueError as err:
                problem = str(err)
        if problem is None:
            problem = state_problem(raw, layout)
        if problem is not None or layout is None:
            return None, problem
        if self.quantized:  # an update relative to the global it was sent: the master copy, not the rounded one
            base = self.reply_base(metrics)
            state = {k: base[k] + raw[k] for k in layout}
        else:
            for key, array in raw.items():
                if array.dtype not in WIRE_NUMPY_DTYPES:
                    return None, f"{key!r}: dtype {array.dtype}, expected float16 or float32"
            state = {k: np.asarray(raw[k], dtype=np.float32) for k in layout}
        reply = Reply(node_of(msg) if node is None else node, state, metrics, msg)
        problem = self.cap_weight(server_round, reply) or self.privacy_problem(reply)
        return (None, problem) if problem else (reply, None)

    def decode_arrays(self, record: ArrayRecord) -> tuple[dict[str, np.ndarray], str | None]:
        """The reply's arrays as numpy (quantized ones dequantized), or the reason they cannot be read."""
        if not self.quantized:
            return {k: a.numpy() for k, a in record.items()}, None
        s = self.settings.strategy
        expected = quantized_stype(QUANTIZED_BITS[s.wire_dtype], s.wire_block_size)
        out = {}
        for key, array in record.items():
            if array.stype != expected:
                return {}, f"{key!r}: serialization {array.stype!r}, expected {expected!r} (strategy.wire-dtype)"
            try:
                out[key] = array_values(array)
            except ValueError as err:
                return {}, f"{key!r}: {err}"
        return out, None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        outcomes, strays = match_replies(self._sent.pop("train", []), replies)
        log = self.recorder.round(server_round)
        clients: list[dict[str, Any]] = []
        usable: list[Reply] = []
        received = 0
        log.update({"replies": sum(o.reply is not None for o in outcomes), "usable": 0, "failures": 0,
                    "exclusions": 0, "excluded": [], "clients": clients})
        log.setdefault("clips", 0)
        log.setdefault("dropped", 0)
        for outcome in outcomes:
            msg, node = outcome.reply, outcome.node
            if msg is None:  # Flower drops replies that come after the round timeout
                clients.append({"node": node})
                self.exclude(server_round, node, "no reply within strategy.round-timeout = "
                             f"{self.settings.strategy.round_timeout:g} s", failure=True)
                continue
            if msg.has_content():
                received += sum(record_nbytes(r) for r in msg.content.array_records.values())
            clients.append({"node": node, **(metrics_of(msg) if msg.has_content() else {})})
            reply, reason = self.screen_reply(server_round, msg, node)
            if reply is None:
                self.exclude(server_round, node, reason or "unusable", failure=msg.has_error())
            else:
                usable.append(reply)
        self.ignore_strays(server_round, "train", strays)
        self.recorder.add_comm(server_round, "train", received_bytes=received)
        usable = self.bound_updates(server_round, usable)
        self.record_example_privacy(server_round, usable)
        if not self.enough_replies(server_round, len(usable)):
            return None, None
        state, metrics = self.aggregate_replies(server_round, usable)
        log["aggregated"] = state is not None
        if metrics is not None:
            log["train-aggregated"] = dict(metrics)
        if state is None:
            return None, metrics
        state = self.complete(state)
        record = to_array_record(state, "float32")  # the master copy stays float32
        self._wire = (record, self.encode_global(state))
        return record, metrics

    def ignore_strays(self, server_round: int, phase: str, strays: list[Message]) -> None:
        """Replies that answer no instruction of this phase (or one already answered): counted, never aggregated."""
        if strays:
            self.recorder.round(server_round)[f"{phase}-stray-replies"] = len(strays)
            announce(f"round {server_round}: {len(strays)} {phase} replies answer no instruction of this round "
                     f"(from nodes {sorted({node_of(m) for m in strays})}): ignored", logging.WARNING)

    def complete(self, aggregate: State) -> State:
        """The whole global adapter: the aggregated shared tensors, and the rest as they were (frozen at the initial
        adapter; personal ones are never here: the server keeps their initial values)."""
        if len(aggregate) == len(self.initial_state):
            return aggregate
        current = self.global_state()
        return {k: aggregate[k] if k in aggregate else current[k] for k in self.initial_state}

    def exclude(self, server_round: int, node: int, reason: str, failure: bool = False) -> None:
        """Leave one client out of this round's aggregate, with its reason, counted in metrics.jsonl.

        failure: an error reply or no reply (counted in `failures`); otherwise a reply screened out (`exclusions`).
        """
        log = self.recorder.round(server_round)
        log["excluded"].append({"node": node, "reason": reason})
        log["failures" if failure else "exclusions"] += 1
        for entry in log.get("clients", []):
            if entry["node"] == node:
                entry["excluded"] = reason
        first_line = reason.splitlines()[0] if reason else reason
        announce(f"round {server_round}: node {node} left out of the aggregate: {first_line}", logging.WARNING)

    def clip(self, server_round: int, node: int, reason: str) -> None:
        """Keep a client in the aggregate with less influence (weight capped, update clipped), counted in `clips`."""
        log = self.recorder.round(server_round)
        log.setdefault("clipped", []).append({"node": node, "reason": reason})
        log["clips"] = log.get("clips", 0) + 1
        for entry in log.get("clients", []):
            if entry["node"] == node:
                entry.setdefault("clipped", []).append(reason)
        announce(f"round {server_round}: node {node}: {reason}", logging.WARNING)

    def enough_replies(self, server_round: int, usable: int) -> bool:
        """True if `usable` replies may be aggregated; otherwise record and say that the adapter stays as it was."""
        log = self.recorder.round(server_round)
        log["usable"] = usable
        if usable >= self.settings.strategy.min_replies:
            return True
        log["aggregated"] = False
        announce(f"round {server_round}: {usable} usable replies (strategy.min-replies = "
                 f"{self.settings.strategy.min_replies}): the global adapter stays as it was", logging.WARNING)
        return False

    def client_metrics(self, replies: list[Reply]) -> MetricRecord:
        return MetricRecord(combine_client_metrics([r.metrics for r in replies],
                                                   self.weighted_by_key))  # type: ignore[attr-defined]

    def aggregate_replies(self, server_round: int, replies: list[Reply]) -> tuple[State | None, MetricRecord | None]:
        """Combine screened replies; by default the Flower parent's rule, fed float32 records of the states."""
        shared = set.intersection(*(set(r.metrics) for r in replies))
        for reply in replies:  # Flower's parents refuse replies whose metric keys differ
            reply.message.content["arrays"] = to_array_record(reply.state, "float32")
            metric_key = next(iter(reply.message.content.metric_records))
            reply.message.content[metric_key] = MetricRecord({k: v for k, v in reply.metrics.items() if k in shared})
        arrays, metrics = super().aggregate_train(server_round, [r.message for r in replies])  # type: ignore[misc]
        return (from_array_record(arrays) if arrays is not None else None), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        outcomes, strays = match_replies(self._sent.pop("evaluate", []), replies)
        self.ignore_strays(server_round, "evaluate", strays)
        ok = [o.reply for o in outcomes if o.reply is not None and o.reply.has_content()]
        for msg in ok:
            self.keep_agreed_content(server_round, msg, EVALUATE_METRICS)
        details = self.settings.privacy.error_details
        self.recorder.round(server_round)["evaluate-clients"] = [
            {"node": o.node, "error": "no reply within strategy.round-timeout"} if o.reply is None
            else {"node": o.node, **metrics_of(o.reply)} if o.reply.has_content()
            else {"node": o.node, "error": kept_error_reason(o.reply.error.reason, details)} for o in outcomes]
        metrics = super().aggregate_evaluate(server_round, ok)  # type: ignore[misc]
        if metrics is not None:
            self.recorder.round(server_round)["evaluate-aggregated"] = dict(metrics)
        return metrics
