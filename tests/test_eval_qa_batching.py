"""Batched, left-padded scoring equals the one-prompt-at-a-time reference on real prompts and a real (tiny) Llama.

The random tiny-llama-micro answers almost everything with a newline, which would make "equal" easy; so the
generation test also uses a copy with its weight matrices scaled up, whose greedy continuations differ from prompt
to prompt and follow every small change in the logits for several tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from fedmedlora.data.qa_benchmarks import load_qa_dataset
from fedmedlora.qa.inference import option_logprobs
from fedmedlora.model.generation import generate_batched, generate_one, left_pad
from fedmedlora.data.qa_prompts import PROTOCOLS
from fedmedlora.qa.scoring import evaluate_qa_dataset
from fedmedlora.model.loading import load_tokenizer, resolve_model_source

MODEL = "builtin:tiny-llama-micro"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a busy CPU they cost a lot
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL, "causal")


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(resolve_model_source(MODEL)).eval()


@pytest.fixture(scope="module")
def sharp_model():
    sharp = AutoModelForCausalLM.from_pretrained(resolve_model_source(MODEL)).eval()
    with torch.no_grad():
        for parameter in sharp.parameters():
            if parameter.dim() == 2:
                parameter.mul_(6.0)
    return sharp


@pytest.fixture(scope="module")
def mixed_prompts():
    """8 real prompts from each benchmark: lengths from ~150 to ~1000 tokens, so batches carry lots of padding."""
    prompts = []
    for name in ("medmcqa", "medqa", "pubmedqa"):
        items = load_qa_dataset(name).items
        prompts += [PROTOCOLS[name].prompt(item) for item in items[::97][:8]]
    return prompts


def test_batched_generation_equals_the_loop_token_for_token(sharp_model, tokenizer, mixed_prompts):
    ids = tokenizer(mixed_prompts)["input_ids"]
    assert max(map(len, ids)) > 3 * min(map(len, ids))
    looped = [generate_one(sharp_model, tokenizer, prompt, 6) for prompt in mixed_prompts]
    batched = []
    for start in range(0, len(ids), 8):  # each batch mixes lengths because prompts are in dataset order
        batched += generate_batched(sharp_model, tokenizer, ids[start:start + 8], 6)
    assert len(set(looped)) >= 12, "the check is only meaningful if continuations differ"
    assert batched == looped


def test_padding_changes_the_last_logits_only_by_rounding(model, tokenizer, mixed_prompts):
    ids = tokenizer(mixed_prompts[::3])["input_ids"]
    padded_ids, mask = left_pad(ids, tokenizer.pad_token_id, torch.device("cpu"))
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.inference_mode():
        together = model(input_ids=padded_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        alone = torch.cat([model(input_ids=torch.tensor([row])).logits[:, -1] for row in ids])
        unmasked = model(input_ids=padded_ids, position_ids=positions).logits[:, -1]  # pads attended to
    assert torch.allclose(together, alone, atol=1e-4)
    padded_rows = mask[:, 0] == 0
    assert padded_rows.sum() >= 2
    assert (unmasked[padded_rows] - alone[padded_rows]).abs().amax() > 1e-2  # so the mask is what makes them equal


@pytest.mark.parametrize("name", ["medmcqa", "medqa", "pubmedqa"])
def test_generate_mode_records_equal_generate_loop(model, tokenizer, name):
    dataset = load_qa_dataset(name).limited(24)
    outputs = {}
    for mode in ("generate", "generate-loop"):
        records = []
        evaluate_qa_dataset(model, tokenizer, dataset, mode=mode, batch_size=8, on_records=records.extend,
                            progress=False)
        outputs[mode] = sorted(records, key=lambda r: r["index"])
    assert len(outputs["generate"]) == 24
    assert outputs["generate"] == outputs["generate-loop"]


def test_loglik_scores_do_not_depend_on_the_batch(model, tokenizer, mixed_prompts):
    ids = tokenizer(mixed_prompts)["input_ids"]
    options = [[35, 36, 37, 38]] * len(ids)  # token ids of "A".."D" on this tokenizer
    assert [tokenizer.decode([t]) for t in options[0]] == ["A", "B", "C", "D"]
    batched = option_logprobs(model, tokenizer, ids, options)
    single = [option_logprobs(model, tokenizer, [row], options[:1])[0] for row in ids]
    assert torch.allclose(torch.tensor(batched), torch.tensor(single), atol=1e-4)
    argmax = lambda rows: [max(range(4), key=row.__getitem__) for row in rows]  # noqa: E731
    assert argmax(batched) == argmax(single)
