"""What a site holds of the adapter between rounds, and what it sends back: the ClientApp's side of the wire.

Receiving: the message carries the strategy's shared tensors (aggregation/key_roles.py), as values (float16/float32)
or, with `strategy.wire-dtype` int8/int4, as the quantized difference from the initial adapter. The site completes
them into the adapter it loads: frozen tensors from the initial adapter (which it draws from run.seed as the server
did; the server's fingerprint of it comes in the config and must match), personal tensors from its own store.

Replying: only the shared tensors go back: as values, or, quantized, the update (trained minus received) plus the
residual the last quantization lost (error feedback). The new residual and the personal tensors stay with the site,
in the ClientApp's `context.state` (Flower keeps it per node across rounds, in simulation and in deployment). They are
adapter-sized: 0.3 MiB for the MiniLM default, 52 MiB for LoRA r=32 on an 8B model's q/v.

With heterogeneous ranks (FlexLoRA) a site trains at its own rank (node config `lora-rank`, else lora.site-ranks):
what it receives is cut to that rank (the server's factors come in decreasing order of importance) and the model
runs the adapter of that rank (model/site_rank.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from .aggregation.hetero_rank import state_rank, truncate
from .aggregation.key_roles import FROZEN, PERSONAL, SHARED, key_role, lora_factor
from .model.adapter import load_adapter_state
from .model.site_rank import at_rank
from .wire_quantization import quantize_with_feedback
from .settings import Settings
from .wire import (QUANTIZED_BITS, from_array_record, is_quantized, quantized_array, state_digest,
                   to_array_record)

RESIDUAL_STATE = "fedmedlora.wire-residual"
PERSONAL_STATE = "fedmedlora.personal"
ROUNDS_STATE = "fedmedlora.site"
REFERENCE_CONFIG = "adapter-reference"  # the server's fingerprint of the initial adapter, when sites need it
State = dict[str, np.ndarray]


def _strategy(settings: Settings) -> Any:
    from .strategies import STRATEGIES

    return STRATEGIES[settings.strategy.name].cls


def key_scheme(settings: Settings) -> str:
    return _strategy(settings).key_scheme


def takes_site_ranks(settings: Settings) -> bool:
    """Whether the strategy lets sites train at their own rank (and so wants each reply's `lora-rank`)."""
    return bool(getattr(_strategy(settings), "site_ranks", False))


def site_rank(settings: Settings, context: Context, site: int) -> int:
    """This site's LoRA rank: the node config's lora-rank (a deployment's SuperNode), else lora.site-ranks, else
    lora.r."""
    if "lora-rank" in context.node_config and takes_site_ranks(settings):
        rank = int(context.node_config["lora-rank"])
        if not 0 < rank <= settings.lora.r:
            raise ValueError(f"node config 'lora-rank' = {rank}: must be in 1..lora.r = {settings.lora.r}")
        return rank
    if not settings.site_ranks:
        return settings.lora.r
    if not 0 <= site < len(settings.site_ranks):  # -1 would silently take the last site's rank
        raise ValueError(f"lora.site-ranks has {len(settings.site_ranks)} ranks but this site's place in the "
                         f"federation is {site} (-1: the message names no 'site-nodes' and the node config has no "
                         "'partition-id'): set node config 'lora-rank' on this SuperNode")
    return settings.site_ranks[site]


def needs_reference(settings: Settings, *, plain: bool = False) -> bool:
    """Whether sites must hold the initial adapter: frozen or personal tensors, or updates relative to it (`plain`:
    a message of float32 values, as federated evaluation sends, never carries updates)."""
    return key_scheme(settings) != "all" or (is_quantized(settings.strategy.wire_dtype) and not plain)


@dataclass
class SiteAdapter:
    """One message's adapter at a site: what it received (shared keys, float32) and the whole adapter it loads."""

    settings: Settings
    scheme: str
    received: State
    full: State
    rank: int


def _check_reference(reference: State, msg: Message) -> None:
    config = msg.content.config_records.get("config")
    sent = config.get(REFERENCE_CONFIG) if config is not None else None
    mine = state_digest(reference)
    if sent is None:
        raise ValueError(f"the server sent no '{REFERENCE_CONFIG}' fingerprint, but this strategy or wire format "
                         "needs the initial adapter on both sides: server and site run different fedmedlora versions?")
    if sent != mine:
        raise ValueError(f"initial adapter mismatch: the server's fingerprint is {sent}, this site's {mine} (same "
                         "run.seed, model and labels give the same adapter: check the versions of torch and peft)")


def receive(settings: Settings, job: Any, msg: Message, context: Context, site: int, *, plain: bool = False
            ) -> SiteAdapter:
    """The adapter this site loads for `msg`, and what it received (both at the site's rank). `plain`: the message
    carries the shared tensors as float32 values at the global rank (federated evaluation: exact scores), never the
    wire's quantized differences; frozen and personal tensors are completed here, as in training."""
    scheme = key_scheme(settings)
    rank = site_rank(settings, context, site)
    received = from_array_record(msg.content["arrays"])
    sent_rank = state_rank(received) if rank != settings.lora.r else rank
    if not needs_reference(settings, plain=plain):
        if sent_rank > rank:  # the server did not know this site's rank yet, or evaluates: the best rank-r part
            received = truncate(received, rank)
        return SiteAdapter(settings, scheme, received, received, rank)
    reference = job.initial_adapter()
    _check_reference(reference, msg)
    if is_quantized(settings.strategy.wire_dtype) and not plain:
        base = truncate(reference, sent_rank) if sent_rank != settings.lora.r else reference
        received = {k: base[k] + v for k, v in received.items()}
    if rank != settings.lora.r:
        reference, received = truncate(reference, rank), truncate(received, rank)
    personal = from_array_record(context.state[PERSONAL_STATE]) if PERSONAL_STATE in context.state else {}
    full: State = {}
    for key, initial in reference.items():
        role = key_role(key, scheme)
        if role == SHARED:
            if key not in received:
                raise ValueError(f"the server's message lacks the shared tensor {key!r}")
            full[key] = received[key]
        elif role == PERSONAL:
            full[key] = personal.get(key, initial)
        else:
            full[key] = initial
    return SiteAdapter(settings, scheme, received, full, rank)


@contextlib.contextmanager
def loaded(job: Any, site: SiteAdapter) -> Iterator[str]:
    """The resident model with the site's adapter loaded and active (its rank's adapter; see model/site_rank.py)."""
    model = job.resident().model
    with at_rank(model, site.settings, job.task.head, site.rank) as name:
        load_adapter_state(model, site.full, name)
        yield name


@contextlib.contextmanager
def frozen(model: Any, scheme: str) -> Iterator[None]:
    """Keep the scheme's frozen tensors (e.g. FFA-LoRA's A) out of the optimizer for the duration."""
    params = [p for name, p in model.named_parameters()
              if p.requires_grad and lora_factor(name) and key_role(name, scheme) == FROZEN]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def rounds_kept(context: Context) -> int:
    """How many earlier training rounds of this site its kept state (residual, personal tensors) comes from; counts
    this round. A site whose state Flower did not keep (a restarted SuperNode) reports 0 and starts afresh."""
    from flwr.app import ConfigRecord

    before = int(context.state[ROUNDS_STATE]["train-rounds"]) if ROUNDS_STATE in context.state else 0
    context.state[ROUNDS_STATE] = ConfigRecord({"train-rounds": before + 1})
    return before


def reply_arrays(site: SiteAdapter, trained: State, context: Context) -> ArrayRecord:
    """The shared tensors to send back; personal tensors and the quantization residual are kept in `context.state`."""
    settings = site.settings
    personal = {k: v for k, v in trained.items() if key_role(k, site.scheme) == PERSONAL}
    if personal:
        context.state[PERSONAL_STATE] = to_array_record(personal, "float32")
    shared = {k: trained[k] for k in site.received}
    wire = settings.strategy.wire_dtype
    if not is_quantized(wire):
        return to_array_record(shared, wire)
    stored = from_array_record(context.state[RESIDUAL_STATE]) if RESIDUAL_STATE in context.state else {}
    arrays, residuals = {}, {}
    for key, value in shared.items():
        update = value - site.received[key]
        residual = stored.get(key)
        if residual is not None and residual.shape != update.shape:
            residual = None  # the layout changed (another rank): start the feedback afresh
        q, residuals[key] = quantize_with_feedback(update, residual, QUANTIZED_BITS[wire],
                                                   settings.strategy.wire_block_size)
        arrays[key] = quantized_array(q)
    context.state[RESIDUAL_STATE] = to_array_record(residuals, "float32")
    return ArrayRecord(arrays)


def has_personal(site: SiteAdapter) -> bool:
    return any(key_role(k, site.scheme) == PERSONAL for k in site.full)


def save_personal_checkpoint(site: SiteAdapter, job: Any, site_id: int, config: Any) -> str | None:
    """A site's personalised adapter (shared tensors as received, its own personal ones), written where the site
    runs at the server's checkpoint rounds: <run.results-dir>/<run name>/sites/site<k>/peft_<round>/. In a
    simulation that is the run folder; in a deployment the site's own disk. Returns the folder, or None."""
    import os
    from pathlib import Path

    from .model.adapter import lora_config, save_checkpoint

    settings = site.settings
    run_name, server_round = config.get("run-name"), int(config.get("server-round", 0))
    every = settings.evaluate.checkpoint_every
    due = server_round == settings.num_server_rounds or (every and server_round % every == 0)
    if not (has_personal(site) and run_name and due):
        return None
    folder = (Path(os.path.expanduser(settings.run.results_dir)) / str(run_name) / "sites" / f"site{site_id}"
              / f"peft_{server_round}")
    config_ = lora_config(settings, job.task.head, base_model_name_or_path=settings.model.name)
    save_checkpoint(folder, site.full, config_, extra=job.checkpoint_info(server_round, site=site_id,
                                                                           personalised=True))
    return str(folder)
