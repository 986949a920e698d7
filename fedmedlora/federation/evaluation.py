"""Federated evaluation of the global adapter: each sampled site scores it on its own held-out split and sends counts.

Called from the ServerApp's round end at round 0, every `evaluate.every` rounds and after the last round. It sends
the strategy's shared tensors of the float32 global adapter (the master copy the server keeps, not the rounded wire
copy, so the scores are those of the adapter the server checkpoints; frozen and personal tensors, e.g. FFA-LoRA's A
and FedSA-LoRA's B, never travel: the site completes them as in training; a FlexLoRA site whose rank the strategy
knows gets its rank's factors, which it would otherwise cut from the full-rank adapter itself) to `evaluate.sites`
sampled sites (all when 0; a sample drawn from its own generator seeded by run.seed and the round, so it never
shifts Flower's training sample), each site replies with the count record of its `evaluate.split` (tasks/base.py),
and the server merges the records in site order into exactly the per-site and pooled metrics a pooled evaluation
gives (job.scores_of). Round time then grows with the number of sites sampled, not with the federation.

Flower's own evaluate phase (strategy.configure_evaluate) is not used: it averages client metrics, which cannot give
a pooled F1, and it samples with the global random generator that training sampling also draws from.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ..aggregation.hetero_rank import truncate
from ..aggregation.key_roles import SHARED, keys_with_role
from ..job import scores_of
from ..recorder import RunRecorder
from ..reply_contract import COUNTS_RECORD, EVALUATE_METRICS, METRICS, agreed_counts, allowed_metrics, kept_error_reason
from ..settings import Settings
from ..site_adapter import REFERENCE_CONFIG, key_scheme, needs_reference
from ..wire import from_array_record, record_nbytes, state_digest, to_array_record
from .roster import Roster


class FederatedEvaluation:
    def __init__(self, settings: Settings, roster: Roster, task: Any, grid: Grid, recorder: RunRecorder,
                 initial_state: dict[str, np.ndarray]):
        self.settings = settings
        self.roster = roster
        self.task = task
        self.grid = grid
        self.recorder = recorder
        self.shared_keys = keys_with_role(initial_state, key_scheme(settings), SHARED)
        # sites complete frozen/personal tensors from the initial adapter: both sides must hold the same one
        self.reference = ({REFERENCE_CONFIG: state_digest(initial_state)} if needs_reference(settings, plain=True)
                          else {})
        # a node's LoRA rank where the strategy knows it (FlexLoRA: from its last training reply), else None
        self.rank_of: Callable[[int], int | None] = lambda node: None

    def shared(self, arrays: ArrayRecord) -> ArrayRecord:
        """What an evaluation message carries: the shared tensors of the global adapter, float32 values."""
        if len(self.shared_keys) == len(arrays):
            return arrays
        state = from_array_record(arrays)
        return to_array_record({k: state[k] for k in self.shared_keys}, "float32")

    def sample(self, server_round: int) -> list[int]:
        """Site indices that evaluate after `server_round`: all, or `evaluate.sites` of them."""
        indices = [site.index for site in self.roster.sites]
        wanted = self.settings.evaluate.sites
        if not wanted or wanted >= len(indices):
            return indices
        rng = random.Random(f"{self.settings.run.seed}/evaluate/{server_round}")
        return sorted(rng.sample(indices, wanted))

    def __call__(self, server_round: int, arrays: ArrayRecord) -> dict[str, Any]:
        start = time.perf_counter()
        sampled = self.sample(server_round)
        # float32 values (not a strategy's wire form); run-name: where sites keep personal checkpoints
        config = ConfigRecord({"server-round": server_round, "plain-values": True, **self.reference,
                               "run-name": self.recorder.run_dir.name, **self.roster.message_config()})
        sent = self.shared(arrays)
        nodes = [self.roster.sites[i].node for i in sampled]
        # a node of a lower rank gets its rank's factors: what it would keep of `sent` (exact slicing, the factors
        # are SVD-ordered), so it scores the same model on a smaller message; one record per rank
        ranks = [self.rank_of(node) for node in nodes]
        lower = {rank for rank in ranks if rank is not None and rank < self.settings.lora.r}
        full = from_array_record(sent) if lower else None  # decoded once; truncate slices without copying
        by_rank = {rank: to_array_record(truncate(full, rank), "float32") for rank in lower}
        records_sent = [by_rank.get(rank, sent) for rank in ranks]
        messages = [Message(RecordDict({"arrays": record, "config": config}), dst_node_id=node,
                            message_type=MessageType.EVALUATE, group_id=str(server_round))
                    for node, record in zip(nodes, records_sent)]
        replies = list(self.grid.send_and_receive(messages, timeout=self.settings.strategy.round_timeout))
        received = sum(record_nbytes(r) for m in replies if m.has_content() for r in m.content.array_records.values())
        self.recorder.add_comm(server_round, "evaluate", sent_bytes=sum(record_nbytes(r) for r in records_sent),
                               received_bytes=received)
        records: dict[int, dict[str, float]] = {}
        clients: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        dropped = 0
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            index = self.roster.index_of(node)
            if msg.has_error() or COUNTS_RECORD not in msg.content.metric_records:
                reason = (kept_error_reason(msg.error.reason, self.settings.privacy.error_details) if msg.has_error()
                          else "the reply carries no count record")
                failures.append({"site": index, "node": node, "reason": reason})
                continue
            # only agreed content is kept (reply_contract.py): anything else is counted, never stored
            records[index], extra = agreed_counts(dict(msg.content[COUNTS_RECORD]), self.roster.vocabulary)
            metrics, extra_metrics = allowed_metrics(
                dict(msg.content[METRICS]) if METRICS in msg.content.metric_records else {}, EVALUATE_METRICS)
            dropped += extra + extra_metrics + sum(name not in (COUNTS_RECORD, METRICS) for name in msg.content)
            clients.append({"node": node, **metrics, "site": index})
        replied = {f["site"] for f in failures} | set(records)
        for index in sampled:
            if index not in replied:
                failures.append({"site": index, "node": self.roster.sites[index].node,
                                 "reason": f"no reply within strategy.round-timeout = "
                                           f"{self.settings.strategy.round_timeout:g} s"})
        result: dict[str, Any] = {"by": "sites", "split": self.settings.evaluate.split, "sampled": sampled,
                                  "clients": clients, "failures": failures, **({"dropped": dropped} if dropped else {})}
        if records:
            result.update(scores_of(self.task, records))
        result["seconds"] = time.perf_counter() - start
        return result
