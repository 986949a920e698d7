"""The ClientApp: what travels in a reply, and the resident base model."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedlora import client_app
from fedmedlora.model import resident
from fedmedlora.model.adapter import initial_adapter_state
from fedmedlora.wire import to_array_record
from fedmedlora.job import get_job
from fedmedlora.settings import ConfigError, parse_run_config

from fedmedlora.launch.grid import node_context, train_message
from helpers import TINY_NER

RUN_CONFIG = {**TINY_NER, "train.local-steps": 2}


@pytest.fixture(scope="module")
def initial():
    job = get_job(parse_run_config(RUN_CONFIG))
    return to_array_record(initial_adapter_state(job.settings, job.task.head, len(job.labels), seed=3), "float16")


def test_reply_carries_only_lora_tensors_and_the_head_in_float16(initial):
    reply = client_app.train(train_message(initial, node_id=1), node_context(RUN_CONFIG, 0, 3))
    arrays = reply.content["arrays"]
    keys = list(arrays.keys())
    assert len(keys) == 26
    assert all(".lora_A." in k or ".lora_B." in k or k.startswith("base_model.model.classifier.") for k in keys)
    assert {arrays[k].dtype for k in keys} == {"float16"}
    lora = [k for k in keys if "lora" in k]
    assert all(("attention.self.query" in k) or ("attention.self.value" in k) for k in lora)
    metrics = dict(reply.content["metrics"])
    assert {"num-examples", "num-tokens", "train-loss", "train-steps", "train-examples-seen", "train-tokens-seen",
            "train-seconds", "learning-rate", "site", "model-loads"} <= set(metrics)
    assert metrics["num-examples"] == 48 and metrics["train-steps"] == 2 and metrics["site"] == 0
    assert metrics["learning-rate"] == pytest.approx(1e-3)
    # the adapter moved away from the global one it received
    sent = {k: initial[k].numpy() for k in keys}
    assert any(not np.allclose(arrays[k].numpy(), sent[k]) for k in lora if "lora_B" in k)


def test_float32_on_request(initial):
    reply = client_app.train(train_message(initial, node_id=2),
                             node_context({**RUN_CONFIG, "strategy.wire-dtype": "float32"}, 1, 3))
    assert {a.dtype for a in reply.content["arrays"].values()} == {"float32"}


def test_base_model_is_loaded_once_and_kept_across_rounds_and_nodes(initial):
    get_job(parse_run_config(RUN_CONFIG)).resident()
    loads = resident.base_model_loads()
    model = get_job(parse_run_config(RUN_CONFIG)).resident().model
    base_weight = model.base_model.model.bert.embeddings.word_embeddings.weight
    for server_round, site in [(1, 0), (1, 2), (2, 1), (2, 0)]:
        reply = client_app.train(train_message(initial, node_id=site + 1, server_round=server_round),
                                 node_context(RUN_CONFIG, site, 3))
        assert dict(reply.content["metrics"])["model-loads"] == loads
    assert resident.base_model_loads() == loads
    after = get_job(parse_run_config(RUN_CONFIG)).resident().model
    assert after is model and after.base_model.model.bert.embeddings.word_embeddings.weight is base_weight


def test_each_call_starts_from_the_received_adapter(initial):
    # same message twice: same result, whatever the previous call left in the resident model
    ctx = node_context(RUN_CONFIG, 0, 3)
    first = client_app.train(train_message(initial, node_id=1, server_round=5), ctx)
    client_app.train(train_message(first.content["arrays"], node_id=1, server_round=6), ctx)
    again = client_app.train(train_message(initial, node_id=1, server_round=5), ctx)
    for key in first.content["arrays"].keys():
        assert np.array_equal(first.content["arrays"][key].numpy(), again.content["arrays"][key].numpy())


def test_federation_size_mismatch_is_explained(initial):
    with pytest.raises(ConfigError, match=r"key 'data.num-sites' = 3, but the federation has 2 SuperNodes"):
        client_app.train(train_message(initial, node_id=1), node_context(RUN_CONFIG, 0, 2))
    ctx = node_context(RUN_CONFIG, 0, 3)
    ctx.node_config.clear()
    with pytest.raises(ConfigError, match="node config names no data: start it with --node-config 'data-path="):
        client_app.train(train_message(initial, node_id=1), ctx)
