"""The ClientApp: one site's local training and evaluation of the global adapter.

Each call: the resident base model (loaded once per worker) takes the global adapter from the message, trains with
a fresh optimizer on the site's training split (tokenized once per worker), and replies with the adapter tensors
only, in the wire dtype, plus the agreed metrics (reply_contract.py). Two mods wrap every call: exceptions become
error replies without their text (client_errors.py), and under site-level DP the update is clipped before it leaves
(client_dp.py).
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .client_dp import site_clipping_mod
from .client_errors import error_reply_mod
from .job import get_job
from .model.adapter import adapter_state, load_adapter_state
from .model.dp_sgd import train_privately
from .model.loading import require_cuda_for_quantization
from .model.resident import base_model_loads
from .model.training import ProximalTerm, round_seed, train_locally
from .reply_contract import ARRAYS, EVALUATE_METRICS, METRICS, TRAIN_METRICS, allowed_metrics
from .settings import ConfigError, Settings, parse_run_config
from .wire import from_array_record, to_array_record

LOG = logging.getLogger(__name__)
app = ClientApp(mods=[error_reply_mod, site_clipping_mod])  # the first is the outermost


def agreed(metrics: dict[str, Any], allowed: frozenset[str]) -> MetricRecord:
    """Only agreed metric names leave the site; anything else is a programming error, logged here, not sent."""
    kept, dropped = allowed_metrics(metrics, allowed)
    if dropped:
        LOG.warning("metrics not in reply_contract.py stay at the site: %s", sorted(set(metrics) - set(kept)))
    return MetricRecord(kept)


def site_of(context: Context, settings: Settings) -> int:
    """This node's site: `partition-id` from the node config (set by the simulation, or by the operator)."""
    node_config = context.node_config
    if "partition-id" not in node_config:
        raise ConfigError(["this SuperNode has no 'partition-id' in its node config: start it with "
                           "--node-config \"partition-id=<k> num-partitions=<n>\""])
    site, count = int(node_config["partition-id"]), int(node_config.get("num-partitions", settings.data.num_sites))
    if count != settings.data.num_sites:
        raise ConfigError([f"key 'data.num-sites' = {settings.data.num_sites}, but the federation has {count} "
                           f"SuperNodes: run with --federation-config \"num-supernodes={settings.data.num_sites}\" "
                           "(`fedmedlora run` sets it for you)"])
    return site


def _prepare(msg: Message, context: Context) -> tuple[Settings, Any, int]:
    settings = parse_run_config(context.run_config)
    require_cuda_for_quantization(settings.model.quantization, "this ClientApp")
    site = site_of(context, settings)
    job = get_job(settings)
    load_adapter_state(job.resident().model, from_array_record(msg.content["arrays"]))
    return settings, job, site


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, job, site = _prepare(msg, context)
    config = msg.content["config"]
    server_round = int(config["server-round"])
    train_dataset = job.tokenized(site, "train")
    mu = float(config.get("proximal-mu", 0.0))  # sent by FedProx: the proximal term is applied here, on the client
    if settings.privacy.dp == "example":  # DP-SGD: every example's influence bounded and noised
        metrics: dict[str, Any] = train_privately(
            settings, job.task, job.resident(), train_dataset, learning_rate=float(config["learning-rate"]),
            seed=round_seed(settings, server_round, site), server_round=server_round)
    else:
        metrics = train_locally(
            settings, job.task, job.resident(), train_dataset,
            learning_rate=float(config["learning-rate"]),
            seed=round_seed(settings, server_round, site),
            extra_loss=ProximalTerm(mu) if mu > 0 else None,
        )
    metrics.update({
        "num-examples": len(train_dataset),
        "num-tokens": job.task.count_tokens(train_dataset),
        "site": site,
        "model-loads": base_model_loads(),
    })
    arrays = to_array_record(adapter_state(job.resident().model), settings.strategy.wire_dtype)
    return Message(RecordDict({ARRAYS: arrays, METRICS: agreed(metrics, TRAIN_METRICS)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    settings, job, site = _prepare(msg, context)
    result = job.evaluate(settings.evaluate.split, [site])
    # per-type scores ("Disease/strict-f1") name the site's label types: they stay here
    metrics = {k: float(v) for k, v in result["pooled"].items() if k in EVALUATE_METRICS}
    metrics.update({"num-examples": len(job.sites[site].split(settings.evaluate.split)),
                    "num-tokens": len(job.sites[site].split(settings.evaluate.split)), "site": site})
    return Message(RecordDict({METRICS: agreed(metrics, EVALUATE_METRICS)}), reply_to=msg)
