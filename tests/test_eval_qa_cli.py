"""The eval command end to end on tiny-llama-micro: flags, output files, PEFT adapters and early, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedmedlora.evaluation import cli, eval_model
from fedmedlora.qa import scoring as qa_run

ROOT = Path(__file__).resolve().parents[1]
MICRO = "builtin:tiny-llama-micro"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a busy CPU they cost a lot
    yield
    torch.set_num_threads(before)


def run_cli(*flags: str) -> int:
    return cli.main(["--base-model-name-path", MICRO, "--quantization", "0", "--device", "cpu", "--no-progress",
                     *flags])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scores_bundled_and_jsonl_datasets_and_writes_every_output(tmp_path, capsys):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"question": "Which?", "options": ["x", "y", "z"], "answer": 1}) + "\n")
    out = tmp_path / "out"
    assert run_cli("--datasets", f"medqa,pubmedqa,{mine}", "--limit", "5", "--batch-size", "2",
                   "--run-name", "try", "--output-dir", str(out)) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["mode"] == "generate" and summary["run_name"] == "try"
    assert set(summary["datasets"]) == {"medqa", "pubmedqa", "mine"}
    medqa = summary["datasets"]["medqa"]
    assert medqa["total"] == 5 and 0 <= medqa["correct"] <= 5
    assert sum(medqa["gold_distribution"].values()) == 5
    assert sum(medqa["predicted_distribution"].values()) + medqa["unparseable"] == 5
    assert summary["datasets"]["mine"]["total"] == 1
    assert summary["machine"]["cpu_count"] >= 1 and "torch_threads" in summary["machine"]

    for name in ("medqa", "pubmedqa", "mine"):
        accuracy = summary["datasets"][name]["accuracy"]
        assert (out / f"acc_{name}_try.txt").read_text() == f"Accuracy: {accuracy}. "
        records = read_jsonl(out / f"generation_{name}_try.jsonl")
        assert len(records) == summary["datasets"][name]["total"]
        assert {"prompt", "gold", "prediction", "generation", "correct"} <= set(records[0])
    assert not list(out.glob("*.partial")) and not list(out.glob("*.tmp*"))
    assert "medqa: Accuracy:" in capsys.readouterr().out


def test_default_datasets_are_the_leaderboards_four_and_their_average_is_reported(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--limit", "8", "--seed", "11", "--mode", "loglik", "--output-dir", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["datasets"]) == ["careqa", "medmcqa", "medqa", "pubmedqa"]
    assert summary["argv"] == ["--base-model-name-path", MICRO, "--quantization", "0", "--device", "cpu",
                               "--no-progress", "--limit", "8", "--seed", "11", "--mode", "loglik", "--output-dir",
                               str(out)]  # no --datasets: the default list
    accuracies = [summary["datasets"][name]["accuracy"] for name in ("pubmedqa", "medmcqa", "medqa", "careqa")]
    assert summary["leaderboard_average"] == pytest.approx(sum(accuracies) / 4)
    assert summary["leaderboard_missing"] == [] and summary["leaderboard_sampled"] is True
    assert summary["seed"] == 11
    for name in ("pubmedqa", "careqa"):
        sample = summary["datasets"][name]["sample"]
        ids = [r["id"] for r in read_jsonl(out / f"generation_{name}_fl.jsonl")]
        assert (sample["seed"], sample["size"]) == (11, 8) and sorted(sample["ids"]) == sorted(ids)
    assert summary["datasets"]["careqa"]["sample"]["of"] == 5621
    assert f"FlowerTune leaderboard average (pubmedqa, medmcqa, medqa, careqa): " \
           f"{summary['leaderboard_average']:.4f} (on --limit samples" in capsys.readouterr().out
    # a second invocation into the same folder scoring one dataset again keeps the average over all four
    assert run_cli("--datasets", "medqa", "--limit", "8", "--seed", "11", "--mode", "loglik",
                   "--output-dir", str(out)) == 0
    assert json.loads((out / "summary.json").read_text())["leaderboard_average"] == summary["leaderboard_average"]


def test_default_output_folder_and_progress_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--base-model-name-path", MICRO, "--quantization", "0", "--device", "cpu", "--datasets",
                     "medmcqa", "--limit", "3", "--mode", "loglik"]) == 0
    folder = tmp_path / "eval" / "results" / "fl"
    assert (folder / "acc_medmcqa_fl.txt").exists()
    record = read_jsonl(folder / "generation_medmcqa_fl.jsonl")[0]
    assert set(record["option_logprobs"]) == {"A", "B", "C", "D"} and record["generation"] is None
    assert "medmcqa [loglik]" in capsys.readouterr().err


def test_a_lora_adapter_saved_with_save_pretrained_is_applied(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fedmedlora.model.loading import resolve_model_source

    base = AutoModelForCausalLM.from_pretrained(resolve_model_source(MICRO))
    adapted = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:  # zero at init: give it weight so the adapter visibly changes the scores
                parameter.normal_(std=0.5)
    adapted.save_pretrained(tmp_path / "adapter")

    scores = {}
    for label, extra in (("base", []), ("lora", ["--peft-path", str(tmp_path / "adapter")])):
        out = tmp_path / label
        assert run_cli("--datasets", "medqa", "--limit", "4", "--mode", "loglik", "--output-dir", str(out),
                       *extra) == 0
        scores[label] = [r["option_logprobs"] for r in read_jsonl(out / "generation_medqa_fl.jsonl")]
    assert json.loads((tmp_path / "lora" / "summary.json").read_text())["peft_path"] == str(tmp_path / "adapter")
    assert scores["base"] != scores["lora"]


def _refuse_to_load(request, **kwargs):
    raise AssertionError("the model was loaded although the flags were wrong")


@pytest.mark.parametrize("flags, message", [
    (["--quantization", "4"], "--quantization 4 needs a CUDA GPU"),
    (["--quantization", "8"], "--quantization 8 needs a CUDA GPU"),
    (["--datasets", "medqa,nosuch"], "dataset 'nosuch' is neither a bundled test set"),
    (["--peft-path", "./no/such/adapter"], "--peft-path ./no/such/adapter: no such folder"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--run-name", "a/b"], "--run-name 'a/b' must be a plain name"),
    (["--task", "ner", "--datasets", "nosuch"], "'nosuch' is neither a bundled NER dataset (ncbi_disease, bc5cdr)"),
    (["--task", "re", "--datasets", "nosuch"], "'nosuch' is neither a bundled RE dataset"),
])
def test_bad_flags_fail_before_any_model_loads(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    monkeypatch.chdir(tmp_path)
    args = ["--base-model-name-path", MICRO, "--device", "cpu", "--quantization", "0", *flags]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_bad_jsonl_line_is_reported_with_file_and_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "options": ["a", "b"], "answer": 0}\n{"question": "Q?", "options": []}\n')
    assert run_cli("--datasets", str(bad), "--output-dir", str(tmp_path / "out")) == 2
    assert f"{bad}, line 2: missing key 'answer'" in capsys.readouterr().err


def test_peft_folder_without_adapter_config_and_encoder_base_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    assert run_cli("--peft-path", str(tmp_path), "--output-dir", str(tmp_path / "out")) == 2
    assert "has no adapter_config.json" in capsys.readouterr().err
    assert cli.main(["--base-model-name-path", "builtin:minilm-l6", "--quantization", "0", "--device", "cpu",
                     "--output-dir", str(tmp_path / "out")]) == 2
    assert "not a causal LM" in capsys.readouterr().err


def test_a_failure_keeps_finished_datasets_and_batches(tmp_path, monkeypatch):
    real = qa_run.generate_batched
    calls = []

    def fail_on_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(qa_run, "generate_batched", fail_on_fourth_batch)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli("--datasets", "medmcqa,medqa", "--limit", "4", "--batch-size", "2", "--output-dir", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("failed on medqa: RuntimeError: simulated crash")
    assert summary["datasets"]["medmcqa"]["total"] == 4  # the dataset that finished is kept
    assert (out / "acc_medmcqa_fl.txt").exists()
    assert len(read_jsonl(out / "generation_medqa_fl.jsonl.partial")) == 2  # medqa's first batch, written
    assert not (out / "generation_medqa_fl.jsonl").exists()


def test_eval_script_runs_from_the_eval_folder():
    """`cd eval && python eval.py ...` as with FlowerTune: FlowerTune's default --quantization 4 is refused on CPU."""
    done = subprocess.run([sys.executable, "eval.py", "--base-model-name-path", MICRO, "--task", "ner"],
                          cwd=ROOT / "eval", capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--quantization 4 needs a CUDA GPU" in done.stderr
    helped = subprocess.run([sys.executable, "eval.py", "--help"], cwd=ROOT / "eval", capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--base-model-name-path" in helped.stdout and "--peft-path" in helped.stdout


@pytest.mark.slow
def test_eval_script_writes_next_to_itself_from_any_folder(tmp_path):
    """A real run through `python eval/eval.py` in a fresh interpreter (torch import and all: ~10 s)."""
    import shutil
    import uuid

    run_name = f"pytest-{uuid.uuid4().hex[:8]}"
    folder = ROOT / "eval" / "results" / run_name
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "eval" / "eval.py"), "--base-model-name-path", MICRO, "--quantization", "0",
             "--device", "cpu", "--datasets", "medqa", "--limit", "2", "--run-name", run_name, "--no-progress"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert (folder / f"acc_medqa_{run_name}.txt").read_text().startswith("Accuracy: ")
        assert not (tmp_path / "eval").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.exists() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()  # leave no empty eval/results/ behind in the checkout
