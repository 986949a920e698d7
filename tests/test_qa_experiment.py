"""QA accuracy per round in `fedmedlora experiment`, and the final models scored again by eval.py (`qa_eval`): one
tiny experiment end to end (slow), and the final-model table from eval outputs (fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedmedlora.experiment.cli import main
from fedmedlora.experiment.qa_eval import final_models, main as qa_eval_main, recorded_commands, table

ROOT = Path(__file__).resolve().parents[1]
TINY_QA = ('data.task="instruct" data.datasets="pubmedqa_pool" data.partitioning="dirichlet" '
           'data.partition-by="answer" data.num-sites=2 data.max-length=128 data.max-train-examples=16 '
           'data.max-eval-examples=4 model.name="builtin:tiny-llama-micro" lora.target-modules="q_proj,v_proj" '
           'train.local-steps=2 train.batch-size=2 num-server-rounds=2 evaluate.batch-size=4 '
           'evaluate.qa-benchmarks="pubmedqa:6,medmcqa:4" evaluate.checkpoint-every=0')


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_accuracy_per_round_and_final_models_rescored_by_eval(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["-c", TINY_QA, "--name", "qa", "--output", str(tmp_path),
                 "--settings", "zero-shot,centralized,federated"]) == 0
    out = tmp_path / "qa"
    assert (out / "accuracy_per_round.png").stat().st_size > 10_000
    table_md = (out / "table.md").read_text()
    assert "| pubmedqa acc | pubmedqa loglik acc | pubmedqa unparseable | medmcqa acc |" in table_md
    assert "QA benchmarks after every round (`evaluate.qa-benchmarks`): pubmedqa 6, medmcqa 4 questions" in table_md

    rows = _csv(out / "results.csv")
    per_round = {(r["setting"], r["model"], r["eval_site"], r["metric"], int(r["round"])): float(r["value"])
                 for r in rows if r["eval_site"] in ("pubmedqa", "medmcqa", "mean")}
    for setting, model in (("centralized", "all sites pooled"), ("federated", "fedavg")):
        for rnd in (0, 1, 2):
            assert per_round[(setting, model, "pubmedqa", "questions", rnd)] == 6
            assert (setting, model, "mean", "loglik-accuracy", rnd) in per_round
    # Round 0 of every model is the untrained adapter: the same numbers as zero-shot, through the server or not.
    for metric in ("generate-accuracy", "loglik-accuracy", "unparseable"):
        zero = per_round[("zero-shot", "-", "pubmedqa", metric, 0)]
        assert per_round[("federated", "fedavg", "pubmedqa", metric, 0)] == zero
    federated = [json.loads(line) for line in
                 (out / "runs" / "federated-fedavg" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r["server-eval"]["benchmarks"]) for r in federated] == [["mean", "medmcqa", "pubmedqa"]] * 3

    # The final models, scored again by eval.py on the same samples, give the per-round final numbers.
    assert [m.run for m in final_models(out)] == ["zero-shot", "federated-fedavg", "centralized"]
    assert qa_eval_main([str(out), "--benchmarks", "pubmedqa:6,medmcqa:4"]) == 0
    final = {(r["setting"], r["model"], r["benchmark"], r["mode"]): float(r["accuracy"])
             for r in _csv(out / "qa_results.csv")}
    assert len(final) == 3 * 2 * 2
    for (setting, model, benchmark, mode), accuracy in final.items():
        last = 0 if setting == "zero-shot" else 2
        assert per_round[(setting, model, benchmark, f"{mode}-accuracy", last)] == accuracy
    assert "| federated | fedavg |" in (out / "qa_table.md").read_text()


def _summary(folder: Path, mode: str, datasets: dict) -> None:
    (folder / mode).mkdir(parents=True)
    (folder / mode / "summary.json").write_text(json.dumps({"datasets": datasets}))


def test_final_table_from_eval_summaries(tmp_path):
    out = tmp_path / "exp"
    for run in ("zero-shot", "single-site-0-site0", "centralized", "federated-fedavg", "federated-broken"):
        (out / "runs" / run).mkdir(parents=True)
    for run in ("single-site-0-site0", "centralized", "federated-fedavg"):
        for rnd in (0, 3, 10):
            (out / "runs" / run / f"peft_{rnd}").mkdir()
    models = final_models(out)
    assert [(m.run, m.setting, m.model, m.peft.name if m.peft else None) for m in models] == [
        ("zero-shot", "zero-shot", "-", None), ("federated-fedavg", "federated", "fedavg", "peft_10"),
        ("centralized", "centralized", "all sites pooled", "peft_10"),
        ("single-site-0-site0", "single-site", "site0", "peft_10")]  # a run without a checkpoint is left out
    entry = {"accuracy": 0.5, "correct": 3, "total": 6, "unparseable": 2, "limit": 6}
    _summary(out / "runs" / "qa-eval" / "zero-shot", "generate", {"pubmedqa": entry, "medqa": {**entry, "accuracy": .25}})
    _summary(out / "runs" / "qa-eval" / "zero-shot", "loglik", {"pubmedqa": {**entry, "accuracy": .75}})
    text = table(out, models, [("pubmedqa", 6), ("medqa", 4)], ["cmd"])
    assert "Command (from the project root): `cmd`" in text
    assert "| zero-shot | - | 0.5000 | 0.7500 | 2/6 | 0.2500 | n/a | 2/6 | 0.3750 | n/a |" in text
    assert "fedavg" not in text.split("|---|")[1]  # models without scores are not rows


def test_the_table_names_every_command_that_scored_its_models(tmp_path):
    """Rows come from every qa_eval run into the folder (e.g. one model added later), so the header lists them all,
    in the order first run; running a command again does not list it twice."""
    out_root = tmp_path / "exp" / "runs" / "qa-eval"
    first = "python -m fedmedlora.experiment.qa_eval exp --models zero-shot"
    second = "python -m fedmedlora.experiment.qa_eval exp --models centralized"
    assert recorded_commands(out_root, first) == [first]
    assert recorded_commands(out_root, second) == [first, second]
    assert recorded_commands(out_root, first) == [first, second]
    text = table(tmp_path / "exp", [], [("pubmedqa", 6)], recorded_commands(out_root, second))
    assert f"Commands (from the project root), in the order first run:\n\n- `{first}`\n- `{second}`\n" in text
