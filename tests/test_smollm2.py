"""The LLM track on a real pretrained model: SmolLM2-135M-Instruct (builtin:smollm2-135m) and its real tokenizer.

Tokenizer facts the code relies on (pad = eos, right padding for training, left padding for batched generation,
chat-markup tokens as special ids), the EOS being learned at the end of a completion, a federation in process, and
its checkpoint reloaded with PEFT on the converted folder and on the GGUF file, then scored by eval.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedmedlora.data.prompts import instruction_prompt
from fedmedlora.data.qa_benchmarks import load_qa_dataset
from fedmedlora.qa.inference import continuation_token_ids
from fedmedlora.model.generation import generate_batched, generate_one
from fedmedlora.data.qa_prompts import ANSWER_LEAD_IN, PROTOCOLS
from fedmedlora.model.gguf import builtin_gguf_path
from fedmedlora.job import get_job
from fedmedlora.model.loading import load_tokenizer
from fedmedlora.settings import parse_run_config

SMOLLM2 = "builtin:smollm2-135m"
# Short sequences and few steps: a SmolLM2 step on 2 CPU cores costs seconds.
SMOLLM2_INSTRUCT = {
    "num-server-rounds": 1,
    "data.task": "instruct",
    "data.datasets": "medquad",
    "data.num-sites": 2,
    "data.max-length": 64,
    "data.max-train-examples": 4,
    "data.max-eval-examples": 2,
    "model.name": SMOLLM2,
    "lora.target-modules": "q_proj,v_proj",
    "train.local-steps": 2,
    "train.batch-size": 2,
    "train.learning-rate-max": 3e-3,
    "train.learning-rate-min": 3e-3,
    "evaluate.batch-size": 2,
}
SHORT_ANSWERS = [("Is aspirin an NSAID?", "Yes."), ("Is insulin made in the liver?", "No, in the pancreas."),
                 ("What does an oncologist treat?", "Cancer."), ("Which organ filters the blood?", "The kidney.")]


@pytest.fixture(scope="module")
def tokenizer(smollm2_folder):
    return load_tokenizer(SMOLLM2, "causal")


@pytest.fixture(scope="module")
def job(smollm2_folder):
    return get_job(parse_run_config(SMOLLM2_INSTRUCT))


def short_rows() -> list[dict[str, str]]:
    return [{"prompt": instruction_prompt(q), "completion": a} for q, a in SHORT_ANSWERS]


# --- the tokenizer --------------------------------------------------------------------------------------------------

def test_pad_is_eos_and_training_pads_on_the_right(tokenizer):
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.padding_side == "right"
    assert tokenizer("Hello")["input_ids"] == [19556]  # no BOS is added, as SmolLM2's own tokenizer does


def test_chat_markup_in_the_qa_prompt_becomes_special_tokens(tokenizer):
    item = load_qa_dataset("medqa").items[0]
    ids = tokenizer(PROTOCOLS["medqa"].prompt(item))["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (start, end) == (1, 2)
    assert ids[0] == start and ids.count(start) == 2 and ids.count(end) == 1
    assert "<" not in tokenizer.convert_ids_to_tokens(ids[1])  # "question" right after the marker, not "<|im"
    # every answer the protocols expect is one token after the lead-in: one forward pass decides it
    for text in ("A", "B", "C", "D", "yes", "no", "maybe"):
        assert len(continuation_token_ids(tokenizer, ANSWER_LEAD_IN, text)) == 1, text


def test_eos_ends_every_completion_and_is_a_label_through_trls_collator(job):
    from fedmedlora.model.training import training_arguments

    resident = job.resident()
    eos = resident.tokenizer.eos_token_id
    dataset = job.task.tokenize(short_rows(), resident.tokenizer)
    for row in dataset:
        assert row["input_ids"][-1] == eos and row["labels"][-1] == eos and row["completion_mask"][-1] == 1
        prompt_length = row["completion_mask"].index(1)
        assert set(row["labels"][:prompt_length]) == {-100}
    args = training_arguments(job.settings, family="causal", learning_rate=1e-3, seed=0, output_dir="unused")
    trainer = job.task.make_trainer(resident, dataset, args)
    lengths = [len(row["input_ids"]) for row in dataset]
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert lengths[short] < lengths[long]
    batch = trainer.data_collator([dataset[short], dataset[long]])
    n = lengths[short]
    # the padded row: its EOS (the same id as the padding) stays a label; only the padding after it is ignored
    assert batch["labels"][0, n - 1].item() == eos and batch["attention_mask"][0, n - 1].item() == 1
    assert batch["labels"][0, n:].eq(-100).all() and batch["attention_mask"][0, n:].eq(0).all()
    assert batch["labels"][1, -1].item() == eos


def test_the_site_trainer_computes_trls_loss_and_gradients_without_its_cpu_fused_head(job):
    """Off CUDA the client's SFT loss is the model's own (TRL's fused LM head falls back to slow torch tiles there):
    the same completion-only loss and LoRA gradients as TRL's path, per token and with num_items_in_batch."""
    from trl import SFTTrainer

    from fedmedlora.model.sft_trainer import SiteSFTTrainer, fused_head_has_kernel
    from fedmedlora.model.training import training_arguments

    resident = job.resident()
    dataset = job.task.tokenize(short_rows(), resident.tokenizer)
    args = training_arguments(job.settings, family="causal", learning_rate=1e-3, seed=0, output_dir="unused")
    ours = job.task.make_trainer(resident, dataset, args)
    assert isinstance(ours, SiteSFTTrainer) and not fused_head_has_kernel(torch.device("cpu"))
    trls = SFTTrainer(model=resident.model, args=args, train_dataset=dataset, processing_class=resident.tokenizer)
    batch = ours.data_collator([dataset[i] for i in range(len(dataset))])
    completion_tokens = int(batch["labels"][:, 1:].ne(-100).sum())
    lora = [p for n, p in resident.model.named_parameters() if p.requires_grad and "lora_" in n]
    resident.model.eval()  # no LoRA dropout: both paths see the same network
    per_token = None
    for items in (None, torch.tensor(completion_tokens * 3)):
        losses, grads = [], []
        for trainer in (ours, trls):
            resident.model.zero_grad(set_to_none=True)
            loss = trainer.compute_loss(resident.model, dict(batch), num_items_in_batch=items)
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in lora]))
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)
        assert (grads[0] - grads[1]).norm() <= 1e-3 * grads[1].norm()  # float32 sums in another order
        per_token = losses[0] if per_token is None else per_token
    resident.model.zero_grad(set_to_none=True)
    resident.model.train()
    # over 3x the batch's completion tokens: the per-token NLL / 3, so num_items_in_batch was used
    assert losses[0] == pytest.approx(per_token / 3, rel=1e-4)


def test_left_padded_batches_generate_what_single_prompts_do(job, tokenizer):
    model = job.resident().model
    model.eval()
    questions = ["What is anemia?", "Name one symptom of diabetes.", "What does the kidney do in the human body?",
                 "Is aspirin an NSAID?"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    ids = tokenizer(prompts)["input_ids"]
    assert len(set(map(len, ids))) > 2  # different lengths: the batch is padded
    with model.disable_adapter():
        batched = generate_batched(model, tokenizer, ids, 6)
        single = [generate_one(model, tokenizer, prompt, 6) for prompt in prompts]
    assert batched == single
    assert all(text.strip() for text in single) and len(set(single)) == len(single)


@pytest.mark.slow
def test_training_teaches_the_model_to_end_its_answer(job):
    from fedmedlora.model.adapter import adapter_state, load_adapter_state
    from fedmedlora.model.training import train_locally
    from fedmedlora.settings import with_overrides

    resident = job.resident()
    eos = resident.tokenizer.eos_token_id
    rows = short_rows()
    dataset = job.task.tokenize(rows, resident.tokenizer)
    saved = adapter_state(resident.model)

    def eos_logprob_after_the_answer() -> float:
        resident.model.eval()
        with torch.no_grad():
            return sum(torch.log_softmax(resident.model(input_ids=torch.tensor([row["input_ids"]])).logits[0, -2],
                                         dim=-1)[eos].item() for row in dataset) / len(dataset)

    try:
        before = eos_logprob_after_the_answer()
        loss_before = job.task.score(job.task.predict(resident, rows, dataset, 4))["loss"]
        settings = with_overrides(job.settings, {"train.local-steps": 3, "train.batch-size": 4})
        train_locally(settings, job.task, resident, dataset, learning_rate=3e-3, seed=1)
        after = eos_logprob_after_the_answer()
        loss_after = job.task.score(job.task.predict(resident, rows, dataset, 4))["loss"]
        assert after > before + 1.0 and after > -0.7, (before, after)  # EOS is now the likeliest next token
        assert loss_after < loss_before - 0.5, (loss_before, loss_after)
        prompt = resident.tokenizer(rows[0]["prompt"], return_tensors="pt")
        out = resident.model.generate(**prompt, max_new_tokens=12, do_sample=False)
        assert eos in out[0, prompt["input_ids"].shape[1]:].tolist()  # it stops instead of running on
    finally:
        load_adapter_state(resident.model, saved)


# --- a federation, its checkpoint reloaded, and scored --------------------------------------------------------------

@pytest.fixture(scope="module")
def federated_run(tmp_path_factory, smollm2_folder):
    from fedmedlora.launch.grid import run_in_process

    out = tmp_path_factory.mktemp("runs")
    result = run_in_process({**SMOLLM2_INSTRUCT, "run.results-dir": str(out), "run.name": "smollm2"})
    return Path(result["run-dir"]), result


@pytest.mark.slow
def test_a_federation_trains_smollm2_and_checkpoints_its_base(federated_run):
    run_dir, result = federated_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1]
    losses = [r["server-eval"]["pooled"]["loss"] for r in records]
    assert losses[1] < losses[0], losses  # held-out completion loss after one round of 2 x 2 steps
    assert sorted(c["site"] for c in records[1]["clients"]) == [0, 1]
    info = json.loads((run_dir / "peft_1" / "fedmedlora.json").read_text())
    assert info["base-model"] == SMOLLM2 and info["base-model-config"]["num_hidden_layers"] == 30
    from safetensors import safe_open

    with safe_open(str(run_dir / "peft_1" / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
        assert len(keys) == 120  # 30 layers x (q_proj, v_proj) x (A, B)
        assert fh.get_tensor(next(k for k in keys if "q_proj.lora_A" in k)).shape == (8, 576)
        assert fh.get_tensor(next(k for k in keys if "v_proj.lora_B" in k)).shape == (192, 8)


@pytest.mark.slow
def test_the_checkpoint_loads_on_the_folder_and_on_the_gguf_file_with_equal_logits(federated_run, job,
                                                                                   smollm2_folder, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fedmedlora.model.adapter import load_adapter_state

    run_dir, _ = federated_run
    checkpoint = str(run_dir / "peft_1")
    gguf = builtin_gguf_path("smollm2-135m")
    ids = tokenizer(instruction_prompt("What are the symptoms of anemia?"), return_tensors="pt")["input_ids"]
    logits = {}
    with torch.no_grad():
        on_folder = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_folder), checkpoint).eval()
        logits["folder"] = on_folder(input_ids=ids).logits
        with on_folder.disable_adapter():
            logits["base"] = on_folder(input_ids=ids).logits
        del on_folder
        on_gguf = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32),
            checkpoint).eval()
        logits["gguf"] = on_gguf(input_ids=ids).logits
        del on_gguf
        resident = job.resident().model  # the model the federation trained, holding the final global adapter
        from safetensors.numpy import load_file

        load_adapter_state(resident, load_file(str(run_dir / "peft_1" / "adapter_model.safetensors")))
        resident.eval()
        logits["resident"] = resident(input_ids=ids).logits
    assert torch.equal(logits["folder"], logits["gguf"])
    assert torch.allclose(logits["folder"], logits["resident"], atol=1e-4)
    assert (logits["folder"] - logits["base"]).abs().max() > 1e-3  # the adapter is applied


@pytest.mark.slow
def test_eval_scores_the_checkpoint_on_any_name_of_its_base_and_refuses_another(federated_run, tmp_path, capsys):
    from fedmedlora.evaluation import cli

    run_dir, _ = federated_run
    checkpoint = str(run_dir / "peft_1")
    scores = {}
    for label, base, peft in (("base", SMOLLM2, []), ("adapter", SMOLLM2, ["--peft-path", checkpoint]),
                              ("gguf", str(builtin_gguf_path("smollm2-135m")), ["--peft-path", checkpoint])):
        out = tmp_path / label
        assert cli.main(["--base-model-name-path", base, *peft, "--quantization", "0", "--device", "cpu",
                         "--datasets", "medmcqa", "--limit", "4", "--mode", "loglik", "--no-progress",
                         "--output-dir", str(out)]) == 0  # MedMCQA: short prompts, cheap on a CPU
        summary = json.loads((out / "summary.json").read_text())
        assert summary["datasets"]["medmcqa"]["total"] == 4 and summary["peft_path"] == (peft or [None])[-1]
        scores[label] = [json.loads(line)["option_logprobs"]
                         for line in (out / "generation_medmcqa_fl.jsonl").read_text().splitlines()]
    assert scores["adapter"] == scores["gguf"] and scores["adapter"] != scores["base"]
    assert cli.main(["--base-model-name-path", "builtin:tiny-llama-micro", "--peft-path", checkpoint,
                     "--quantization", "0", "--device", "cpu", "--datasets", "medmcqa",
                     "--output-dir", str(tmp_path / "wrong")]) == 2
    err = capsys.readouterr().err
    assert f"trained on base model '{SMOLLM2}' (llama, hidden 576, layers 30" in err
    assert "'builtin:tiny-llama-micro' (llama, hidden 64, layers 2" in err


def test_the_smollm2_preset_builds_its_adapter_without_loading_weights(smollm2_folder):
    from fedmedlora.model.adapter import initial_adapter_state
    from fedmedlora.settings import load_toml_overrides

    settings = parse_run_config(load_toml_overrides(str(Path(__file__).resolve().parents[1] / "conf" /
                                                        "instruct-smollm2.toml")))
    assert settings.model.name == SMOLLM2
    state = initial_adapter_state(settings, "", None, seed=0)  # meta device: the config only
    assert len(state) == 120 and sum(v.size for v in state.values()) == 30 * 16 * (576 + 576 + 576 + 192)
