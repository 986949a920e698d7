"""The ClientApp: one site's local training and evaluation of the global adapter.

Each call: the resident base model (loaded once per worker) takes the global adapter from the message (completed by
what the site keeps, site_adapter.py), trains with a fresh optimizer on the site's training split (tokenized once per
worker), and replies with the strategy's shared adapter tensors only, in the wire format, plus the metrics the server
records.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .job import get_job
from .model.adapter import adapter_state
from .model.loading import require_cuda_for_quantization
from .model.resident import base_model_loads
from .model.training import ProximalTerm, round_seed, train_locally
from .settings import ConfigError, Settings, parse_run_config
from .site_adapter import (SiteAdapter, frozen, loaded, needs_reference, receive, reply_arrays, rounds_kept,
                           save_personal_checkpoint, takes_site_ranks)

LOG = logging.getLogger(__name__)
app = ClientApp()


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


def _prepare(msg: Message, context: Context) -> tuple[Settings, Any, int, SiteAdapter]:
    settings = parse_run_config(context.run_config)
    require_cuda_for_quantization(settings.model.quantization, "this ClientApp")
    site = site_of(context, settings)
    job = get_job(settings)
    return settings, job, site, receive(settings, job, msg, context, site)


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, job, site, adapter = _prepare(msg, context)
    config = msg.content["config"]
    server_round = int(config["server-round"])
    train_dataset = job.tokenized(site, "train")
    mu = float(config.get("proximal-mu", 0.0))  # sent by FedProx: the proximal term is applied here, on the client
    with loaded(job, adapter) as name, frozen(job.resident().model, adapter.scheme):
        metrics: dict[str, Any] = train_locally(
            settings, job.task, job.resident(), train_dataset,
            learning_rate=float(config["learning-rate"]),
            seed=round_seed(settings, server_round, site),
            extra_loss=ProximalTerm(mu) if mu > 0 else None,
        )
        trained = adapter_state(job.resident().model, name)
    metrics.update({
        "num-examples": len(train_dataset),
        "num-tokens": job.task.count_tokens(train_dataset),
        "site": site,
        "model-loads": base_model_loads(),
    })
    if takes_site_ranks(settings):
        metrics["lora-rank"] = adapter.rank
    if needs_reference(settings):  # the site keeps state between rounds: say how old it is
        metrics["site-rounds-kept"] = rounds_kept(context)
    arrays = reply_arrays(adapter, trained, context)
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    settings, job, site, adapter = _prepare(msg, context)
    with loaded(job, adapter):
        result = job.evaluate(settings.evaluate.split, [site])
    save_personal_checkpoint(adapter, job, site, msg.content["config"])  # FedSA-LoRA: the site's own B stays here
    metrics = {k: float(v) for k, v in result["pooled"].items() if isinstance(v, (int, float)) and "/" not in k}
    metrics.update({"num-examples": len(job.sites[site].split(settings.evaluate.split)),
                    "num-tokens": len(job.sites[site].split(settings.evaluate.split)), "site": site})
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
