"""The ClientApp: one site's description, local training, and evaluation of the global adapter on its own data.

Every handler starts from this node's site (federation/node_site.py: the files its node config names, or a
partition of the bundled pool) and the label set the server sends with every message. What leaves the site:

- query (before round 1): label names and counts (federation/site_report.py);
- train: the strategy's shared adapter tensors in the wire format, plus example/token counts and training figures;
- evaluate: the count record of its own held-out split (tp/fp/fn per agreed label name, loss sums; tasks/base.py),
  never a prediction or a row;

each with the process figures of federation/process_stats.py. The resident base model (loaded once per worker) takes
the global adapter from the message (completed by what the site keeps between rounds, site_adapter.py); training uses a fresh optimizer on the site's training split. Replies carry
only the names agreed in reply_contract.py. Two mods wrap every call: exceptions become error replies without their
text (client_errors.py), and under site-level DP the update is clipped before it leaves (client_dp.py).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .client_dp import site_clipping_mod
from .client_errors import error_reply_mod
from .data.sites import Site
from .federation.node_site import POOL, NodeSite, client_job, load_node_site, node_site, pool_vocabulary
from .federation.process_stats import MessageClock
from .federation.site_report import site_records
from .job import Job, resolve_family
from .model.adapter import adapter_state
from .model.dp_sgd import train_privately
from .model.loading import require_cuda_for_quantization
from .model.resident import base_model_loads
from .model.training import ProximalTerm, round_seed, train_locally
from .reply_contract import ARRAYS, COUNTS_RECORD, EVALUATE_METRICS, METRICS, TRAIN_METRICS, allowed_metrics
from .settings import ConfigError, Settings, parse_run_config
from .tasks.registry import task_class
from .site_adapter import (SiteAdapter, frozen, loaded, needs_reference, receive, reply_arrays, rounds_kept,
                           save_personal_checkpoint, takes_site_ranks)

LOG = logging.getLogger(__name__)
app = ClientApp(mods=[error_reply_mod, site_clipping_mod])  # the first is the outermost


def agreed(metrics: dict[str, Any], allowed: frozenset[str]) -> MetricRecord:
    """Only agreed metric names leave the site; anything else is a programming error, logged here, not sent."""
    kept, dropped = allowed_metrics(metrics, allowed)
    if dropped:
        LOG.warning("metrics not in reply_contract.py stay at the site: %s", sorted(set(metrics) - set(kept)))
    return MetricRecord(kept)


def _settings(context: Context) -> Settings:
    settings = parse_run_config(context.run_config)
    require_cuda_for_quantization(settings.model.quantization, "this ClientApp")
    return settings


def _rows(site: Site) -> list[dict[str, Any]]:
    return [r for split in ("train", "val", "test") for r in site.split(split)]


def site_index(config: Mapping[str, Any], context: Context, node: NodeSite) -> int:
    """This site's place in the federation: from the server's `site-nodes` list (every message after the query
    carries it), else the node's partition-id, else -1 (not placed)."""
    nodes = config.get("site-nodes")
    if nodes and str(context.node_id) in list(nodes):
        return list(nodes).index(str(context.node_id))
    return node.partition_id


def agreed_vocabulary(config: Mapping[str, Any], settings: Settings, node: NodeSite) -> list[str]:
    """The label set every site and the server use: sent by the server, else data.labels, else (a partition of
    the pool, when called outside a server-driven run) the pool's own."""
    if "labels" in config:
        return [str(label) for label in config["labels"]]
    if settings.labels:
        return settings.labels
    if node.kind == POOL:
        return pool_vocabulary(settings)
    raise ConfigError(["the message carries no label set ('labels') and key 'data.labels' is empty: this site "
                       "cannot know the federation's labels from its own data alone"])


def _prepare(msg: Message, context: Context, split: str | None, *, plain: bool = False
             ) -> tuple[Settings, Job, Site, int, MessageClock, SiteAdapter]:
    """Settings, this site's job, the split tokenized (None: the run's `evaluate.split`), the message's clock, and
    the adapter this site loads (site_adapter.py; `plain`: the message carries float32 values of the shared
    tensors, as federated evaluation sends them)."""
    clock = MessageClock()
    settings = _settings(context)
    split = split or settings.evaluate.split
    node = node_site(context.node_config, settings)
    config = msg.content["config"] if "config" in msg.content else {}
    start = time.perf_counter()
    site, origin = load_node_site(node, settings)
    job = client_job(settings, node, agreed_vocabulary(config, settings, node))
    clock.data(time.perf_counter() - start, origin != "read")
    job.resident()  # the base model, loaded now if this process has none (timed by the clock)
    start = time.perf_counter()
    job.tokenized(site.site_id, split)
    clock.data(time.perf_counter() - start, job.tokenized_origin != "tokenized")
    index = site_index(config, context, node)
    adapter = receive(settings, job, msg, context, index, plain=plain)
    return settings, job, site, index, clock, adapter


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this site: its name, its label names, counts per split (no text)."""
    clock = MessageClock()
    settings = _settings(context)
    node = node_site(context.node_config, settings)
    start = time.perf_counter()
    site, origin = load_node_site(node, settings)
    clock.data(time.perf_counter() - start, origin != "read")
    vocabulary = task_class(settings, resolve_family(settings)).vocabulary(_rows(site))
    description, counts = site_records(site, settings.data.task, node.kind, node.partition_id, vocabulary)
    return Message(RecordDict({"site": description, "counts": counts, "metrics": MetricRecord(clock.metrics())}),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    settings, job, site, index, clock, adapter = _prepare(msg, context, "train")
    server_round = int(config["server-round"])
    train_dataset = job.tokenized(site.site_id, "train")
    mu = float(config.get("proximal-mu", 0.0))  # sent by FedProx: the proximal term is applied here, on the client
    seed_site = index if index >= 0 else zlib.crc32(site.name.encode()) % 10_007
    seed = round_seed(settings, server_round, seed_site)
    with loaded(job, adapter) as name, frozen(job.resident().model, adapter.scheme):
        if settings.privacy.dp == "example":  # DP-SGD: every example's influence bounded and noised
            metrics: dict[str, Any] = train_privately(
                settings, job.task, job.resident(), train_dataset, learning_rate=float(config["learning-rate"]),
                seed=seed, server_round=server_round)
        else:
            metrics = train_locally(
                settings, job.task, job.resident(), train_dataset,
                learning_rate=float(config["learning-rate"]),
                seed=seed,
                extra_loss=ProximalTerm(mu) if mu > 0 else None,
            )
        trained = adapter_state(job.resident().model, name)
    metrics.update({
        "num-examples": len(train_dataset),
        "num-tokens": job.task.count_tokens(train_dataset),
        "site": index,
        "model-loads": base_model_loads(),
        **clock.metrics(),
    })
    if takes_site_ranks(settings):
        metrics["lora-rank"] = adapter.rank
    if needs_reference(settings):  # the site keeps state between rounds: say how old it is
        metrics["site-rounds-kept"] = rounds_kept(context)
    arrays = reply_arrays(adapter, trained, context)
    return Message(RecordDict({ARRAYS: arrays, METRICS: agreed(metrics, TRAIN_METRICS)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The count record of the global adapter on this site's own `evaluate.split` (merged by the server). A site that
    keeps personal tensors (FedSA-LoRA) scores the shared part with its own: the personalised model."""
    plain = bool(msg.content["config"].get("plain-values", False)) if "config" in msg.content else False
    settings, job, site, index, clock, adapter = _prepare(msg, context, None, plain=plain)
    split = settings.evaluate.split
    with loaded(job, adapter):
        counts = job.site_counts(site.site_id, split)
    save_personal_checkpoint(adapter, job, index, msg.content["config"])  # FedSA-LoRA: the site's own B stays here
    metrics = {"num-examples": len(site.split(split)), "site": index, **clock.metrics()}
    # counts are numbers per agreed label name (the server sent the label set) and per loss field: no site text
    return Message(RecordDict({COUNTS_RECORD: MetricRecord(counts), METRICS: agreed(metrics, EVALUATE_METRICS)}),
                   reply_to=msg)
