"""The ClientApp's side of the wire, on the real model: int8 updates with error feedback, FFA-LoRA's frozen A, FedSA-LoRA's
kept B, and a site that holds another initial adapter than the server's."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedlora import client_app
from fedmedlora.job import get_job
from fedmedlora.launch.grid import node_context, train_message
from fedmedlora.model.adapter import adapter_state
from fedmedlora.settings import parse_run_config
from fedmedlora.site_adapter import PERSONAL_STATE, RESIDUAL_STATE
from fedmedlora.wire import from_array_record, state_digest, to_array_record
from helpers import TINY_NER

RUN = {**TINY_NER, "train.local-steps": 2}


def setup(overrides: dict) -> tuple[dict, dict, dict]:
    config = {**RUN, **overrides}
    job = get_job(parse_run_config(config))
    initial = job.initial_adapter()
    return config, initial, {"adapter-reference": state_digest(initial)}


def test_int8_reply_is_the_update_and_the_site_keeps_the_residual() -> None:
    config, initial, ref = setup({"strategy.wire-dtype": "int8"})
    ctx = node_context(config, 0, 3)
    zero = to_array_record({k: np.zeros_like(v) for k, v in initial.items()}, "int8")  # round 1: global = initial
    out = client_app.train(train_message(zero, node_id=1, **ref), ctx)
    arrays = out.content["arrays"]
    assert {a.stype for a in arrays.values()} == {"fedmedlora/absmax-int8-b128"}
    assert dict(out.content["metrics"])["site-rounds-kept"] == 0  # nothing kept yet
    trained = adapter_state(get_job(parse_run_config(config)).resident().model)
    sent = from_array_record(arrays)
    residual = from_array_record(ctx.state[RESIDUAL_STATE])
    for key in initial:  # received + sent update + what quantization kept back = the trained adapter
        np.testing.assert_allclose(initial[key] + sent[key] + residual[key], trained[key], atol=1e-6)
    moved = max(float(np.abs(sent[k]).max()) for k in sent if "lora_B" in k)
    kept = max(float(np.abs(residual[k]).max()) for k in residual)
    assert moved > 0 and kept < moved / 100  # 8 bits: the residual is a sliver of the update
    # the next round folds the residual in: what the site sends then includes what it kept back now
    again = client_app.train(train_message(zero, node_id=1, server_round=2, **ref), ctx)
    assert dict(again.content["metrics"])["site-rounds-kept"] == 1
    trained2 = adapter_state(get_job(parse_run_config(config)).resident().model)
    sent2, residual2 = from_array_record(again.content["arrays"]), from_array_record(ctx.state[RESIDUAL_STATE])
    for key in list(initial)[:4]:
        np.testing.assert_allclose(sent2[key] + residual2[key], trained2[key] - initial[key] + residual[key],
                                   atol=1e-6)


def test_a_site_with_another_initial_adapter_refuses_to_train() -> None:
    config, initial, _ = setup({"strategy.wire-dtype": "int4"})
    zero = to_array_record({k: np.zeros_like(v) for k, v in initial.items()}, "int4")
    with pytest.raises(ValueError, match="initial adapter mismatch: the server's fingerprint is 0123456789abcdef"):
        client_app.train(train_message(zero, node_id=1, **{"adapter-reference": "0123456789abcdef"}),
                         node_context(config, 0, 3))
    with pytest.raises(ValueError, match="sent no 'adapter-reference'"):
        client_app.train(train_message(zero, node_id=1), node_context(config, 0, 3))


def test_ffa_trains_b_only_and_never_sends_a() -> None:
    config, initial, ref = setup({"strategy.name": "ffa-lora"})
    shared = {k: v for k, v in initial.items() if ".lora_A." not in k}
    out = client_app.train(train_message(to_array_record(shared, "float16"), node_id=1, **ref),
                           node_context(config, 0, 3))
    assert sorted(out.content["arrays"]) == sorted(shared)
    model = get_job(parse_run_config(config)).resident().model
    trained = adapter_state(model)
    a_keys = [k for k in initial if ".lora_A." in k]
    assert all(np.array_equal(trained[k], initial[k]) for k in a_keys)  # A did not move
    assert any(not np.allclose(trained[k], initial[k]) for k in shared if ".lora_B." in k)
    # unfrozen afterwards (the active adapter's: a resident model may carry other ranks' adapters, inactive, frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if f".lora_A.{model.active_adapter}." in n)


def test_ffa_evaluation_receives_b_only_and_loads_the_initial_a() -> None:
    config, initial, ref = setup({"strategy.name": "ffa-lora", "strategy.wire-dtype": "int8"})
    b_keys = [k for k in initial if ".lora_B." in k]
    global_ = {k: v + 0.5 if k in b_keys else v for k, v in initial.items() if ".lora_A." not in k}
    # evaluation carries float32 values whatever the wire format: not an int8 difference from the initial adapter
    message = train_message(to_array_record(global_, "float32"), node_id=1, **ref, **{"plain-values": True})
    client_app.evaluate(message, node_context(config, 0, 3))
    loaded = adapter_state(get_job(parse_run_config(config)).resident().model)
    assert all(np.array_equal(loaded[k], initial[k]) for k in initial if ".lora_A." in k)  # drawn at the site
    assert all(np.array_equal(loaded[k], global_[k]) for k in b_keys)
    with pytest.raises(ValueError, match="sent no 'adapter-reference'"):  # A comes from the site's own draw
        client_app.evaluate(train_message(to_array_record(global_, "float32"), node_id=1, **{"plain-values": True}),
                            node_context(config, 0, 3))


def test_fedsa_keeps_b_at_the_site_and_loads_it_next_round() -> None:
    config, initial, ref = setup({"strategy.name": "fedsa-lora"})
    shared = {k: v for k, v in initial.items() if ".lora_B." not in k}
    ctx = node_context(config, 1, 3)
    out = client_app.train(train_message(to_array_record(shared, "float16"), node_id=2, **ref), ctx)
    assert sorted(out.content["arrays"]) == sorted(shared)  # B stays here
    kept = from_array_record(ctx.state[PERSONAL_STATE])
    assert sorted(kept) == sorted(k for k in initial if ".lora_B." in k)
    assert any(np.abs(v).max() > 0 for v in kept.values())  # B trained from zero
    # evaluation (global A in float32, as the server sends it) uses this site's own B: the resident model holds it
    evaluation = {**ref, "plain-values": True}
    client_app.evaluate(train_message(to_array_record(shared, "float32"), node_id=2, **evaluation), ctx)
    loaded = adapter_state(get_job(parse_run_config(config)).resident().model)
    assert all(np.array_equal(loaded[k], kept[k]) for k in kept)
    # another site starts from the initial B (zeros), not from this one's
    client_app.evaluate(train_message(to_array_record(shared, "float32"), node_id=3, **evaluation),
                        node_context(config, 2, 3))
    loaded = adapter_state(get_job(parse_run_config(config)).resident().model)
    assert all(not np.any(loaded[k]) for k in kept)


def test_flexlora_evaluation_at_the_sites_rank_scores_as_the_full_rank_message() -> None:
    """The server sends a site whose rank it knows that rank's factors: the same model the site cut from the whole."""
    from fedmedlora.aggregation.hetero_rank import truncate

    config, initial, _ = setup({"strategy.name": "flexlora", "lora.site-ranks": "8,2", "data.num-sites": 2})
    rng = np.random.default_rng(0)
    global_ = {k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in initial.items()}  # a trained B
    scores = []
    for state in (global_, truncate(global_, 2)):
        message = train_message(to_array_record(state, "float32"), node_id=2, **{"plain-values": True})
        reply = client_app.evaluate(message, node_context(config, 1, 2))
        scores.append(dict(reply.content["counts"]))
    assert scores[0]["strict-tp"] + scores[0]["strict-fp"] > 0  # the model predicts entities: a real comparison
    assert scores[0] == scores[1]
