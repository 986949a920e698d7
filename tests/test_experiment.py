"""`fedmedlora experiment`: outputs from fake results (fast), validation before work (fast), and one whole tiny
experiment with every setting, the federated one through a real Flower simulation (slow)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from fedmedlora.experiment.cli import main, make_plan, parser
from fedmedlora.experiment.federated import federated_config, read_federated_run
from fedmedlora.experiment.baselines import centralized_settings
from fedmedlora.experiment.report import (CSV_COLUMNS, ModelResult, RoundScores, markdown_table, plotted_metrics,
                                          read_csv, recorded_models, replot, set_aside, table_metrics, write_report)
from fedmedlora.settings import ConfigError, parse_run_config

ROOT = Path(__file__).resolve().parents[1]
SITES = ["bc5cdr", "ncbi_disease"]


def _scores(strict: float, lenient: float, **extra: float) -> dict[str, float]:
    return {"strict-f1": strict, "lenient-f1": lenient, "loss": 1.0 - strict, **extra}


def _rounds(values: list[float]) -> list[RoundScores]:
    return [RoundScores(r, _scores(v, v + 0.1), {SITES[0]: _scores(v + 0.01, v + 0.11),
                                                 SITES[1]: _scores(v - 0.01, v + 0.09)})
            for r, v in enumerate(values)]


def _fake_results() -> list[ModelResult]:
    return [
        ModelResult("zero-shot", "-", _rounds([0.05]), wall_seconds=7.2, run_dir="runs/zero-shot"),
        ModelResult("single-site", SITES[0], _rounds([0.05, 0.3, 0.4]), wall_seconds=100.0),
        ModelResult("single-site", SITES[1], _rounds([0.05, 0.2, 0.35]), wall_seconds=90.0),
        ModelResult("centralized", "all sites pooled", _rounds([0.05, 0.45, 0.6]), wall_seconds=200.0),
        ModelResult("federated", "fedavg", _rounds([0.05, 0.4, 0.55]), wall_seconds=300.0),
        ModelResult("federated", "fedprox", _rounds([0.05, 0.39]), wall_seconds=150.0,
                    status="failed: fedmedlora run exited with code 1; see runs/federated-fedprox.log"),
    ]


# --- outputs ---------------------------------------------------------------------------------------------------------
def test_table_metrics_lead_with_the_task_headline():
    assert table_metrics("strict-f1", ["strict-f1", "lenient-f1", "loss"]) == ["strict-f1", "lenient-f1"]
    re_scores = ["strict-f1", "typed-strict-micro-f1", "lenient-f1", "typed-lenient-micro-f1"]
    assert table_metrics("typed-strict-micro-f1", re_scores) == ["typed-strict-micro-f1", "typed-lenient-micro-f1"]
    assert table_metrics("loss", ["loss", "perplexity"]) == ["loss"]
    assert table_metrics("loss", ["loss", "lenient-f1"]) == ["loss", "lenient-f1"]


def test_markdown_table_one_row_per_model_final_round():
    table = markdown_table(_fake_results(), SITES, "strict-f1")
    lines = table.strip().splitlines()
    assert lines[0] == ("| setting | model | bc5cdr strict-f1 | bc5cdr lenient-f1 | ncbi_disease strict-f1 | "
                        "ncbi_disease lenient-f1 | pooled strict-f1 | pooled lenient-f1 | rounds | wall s |")
    assert len(lines) == 2 + 6
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines[2:]}
    centralized = rows[("centralized", "all sites pooled")].strip("|").split("|")
    assert [c.strip() for c in centralized[2:]] == ["0.6100", "0.7100", "0.5900", "0.6900", "0.6000", "0.7000",
                                                    "2", "200"]
    assert "| zero-shot | - | 0.0600 |" in table and table.count("| 0 | 7 |") == 1
    assert "fedprox (failed: fedmedlora run exited with code 1" in table  # a failed model keeps its last round
    assert rows[("single-site", "ncbi_disease")].split("|")[-3].strip() == "2"


def test_markdown_table_marks_missing_scores():
    results = [ModelResult("federated", "fedavg", status="failed: boom")]
    table = markdown_table(results + _fake_results()[:1], SITES, "strict-f1")
    assert "| federated | fedavg (failed: boom) | n/a | n/a | n/a | n/a | n/a | n/a | - | 0 |" in table


def test_write_report_writes_table_csv_and_plot_atomically(tmp_path):
    results = _fake_results()
    write_report(tmp_path, results[:2], site_names=SITES, primary="strict-f1", header="# fake\n\nCommand: `x`",
                 title="fake", rounds=2)
    write_report(tmp_path, results, site_names=SITES, primary="strict-f1", header="# fake\n\nCommand: `x`",
                 title="fake", rounds=2)  # rewritten as models finish
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1_per_round.png", "models.json", "results.csv", "table.md"]
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("# fake\n\nCommand: `x`\n\n| setting |") and table.count("\n| federated |") == 2
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    rounds = sum(len(r.rounds) for r in results)
    assert len(rows) == rounds * 3 * 3  # rounds x (2 sites + pooled) x 3 metrics
    pick = [r for r in rows if r["setting"] == "centralized" and r["eval_site"] == "pooled"
            and r["metric"] == "strict-f1"]
    assert [(int(r["round"]), float(r["value"])) for r in pick] == [(0, 0.05), (1, 0.45), (2, 0.6)]
    assert {r["eval_site"] for r in rows} == {*SITES, "pooled"}
    assert (tmp_path / "f1_per_round.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_show_the_test_loss_beside_a_non_loss_headline():
    results = _fake_results()
    assert plotted_metrics(results, "strict-f1") == ["strict-f1", "loss"]
    assert plotted_metrics(results, "loss") == ["loss"]
    no_loss = [ModelResult("centralized", "all sites pooled", [RoundScores(1, {"strict-f1": 0.5}, {})])]
    assert plotted_metrics(no_loss, "strict-f1") == ["strict-f1"]


def test_results_csv_reads_back_into_the_models_and_replots(tmp_path):
    results = _fake_results()
    results[3].rounds[-1].benchmarks = {"pubmedqa": {"generate-accuracy": 0.5, "unparseable": 3.0},
                                        "mean": {"generate-accuracy": 0.5}}
    write_report(tmp_path, results, site_names=SITES, primary="strict-f1", header="# fake", title="fake", rounds=2)
    back = read_csv(tmp_path / "results.csv", SITES)
    assert [(r.setting, r.model) for r in back] == [(r.setting, r.model) for r in results]
    for got, want in zip(back, results):
        assert [(s.round, s.pooled, s.sites, s.benchmarks) for s in got.rounds] == \
            [(s.round, s.pooled, s.sites, s.benchmarks) for s in want.rounds]
    (tmp_path / "config.json").write_text(json.dumps({
        "name": "fake", "primary-metric": "strict-f1", "sites": [{"name": n} for n in SITES],
        "run-config": {"data.task": "ner", "model.name": "m", "num-server-rounds": 2}}))
    (tmp_path / "accuracy_per_round.png").unlink()
    assert replot(tmp_path) == [tmp_path / "f1_per_round.png", tmp_path / "accuracy_per_round.png"]
    assert (tmp_path / "accuracy_per_round.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recorded_models_read_back_from_models_json_or_an_older_table(tmp_path):
    results = _fake_results()
    write_report(tmp_path, results, site_names=SITES, primary="strict-f1", header="# fake", title="fake", rounds=2)
    back = recorded_models(tmp_path, SITES)
    assert [(r.setting, r.model, r.status, r.wall_seconds, r.run_dir) for r in back] == \
        [(r.setting, r.model, r.status, r.wall_seconds, r.run_dir) for r in results]
    assert back[3].final.pooled == results[3].final.pooled
    (tmp_path / "models.json").unlink()  # a folder written before models.json: table.md's rows say the same
    legacy = recorded_models(tmp_path, SITES)
    assert [(r.setting, r.model, r.status, r.wall_seconds) for r in legacy] == \
        [(r.setting, r.model, r.status, round(r.wall_seconds)) for r in results]
    assert recorded_models(tmp_path / "nothing", SITES) == []


def test_set_aside_never_overwrites_an_earlier_attempt(tmp_path):
    assert set_aside(tmp_path / "federated-fedavg") is None
    for n in (1, 2):
        (tmp_path / "federated-fedavg").mkdir()
        (tmp_path / "federated-fedavg" / "metrics.jsonl").write_text(str(n))
        (tmp_path / "federated-fedavg.log").write_text(f"log {n}")
        assert set_aside(tmp_path / "federated-fedavg") == tmp_path / f"federated-fedavg.failed-{n}"
    assert (tmp_path / "federated-fedavg.failed-1" / "metrics.jsonl").read_text() == "1"
    assert (tmp_path / "federated-fedavg.failed-2.log").read_text() == "log 2"
    assert not (tmp_path / "federated-fedavg").exists()


# --- the federated settings, read back -------------------------------------------------------------------------------
def _fake_run(run_dir: Path, names: list[str], rounds: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "sites.json").write_text(json.dumps([{"site": i, "name": n} for i, n in enumerate(names)]))
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for r in range(rounds + 1):
            fh.write(json.dumps({"round": r, "server-eval": {
                "pooled": _scores(0.1 * r, 0.2 * r), "sites": {"0": _scores(0.1, 0.2), "1": _scores(0.3, 0.4)},
                "split": "test", "seconds": 1.0}}) + "\n")


def test_read_federated_run_renames_sites_and_keeps_rounds_of_a_failed_run(tmp_path):
    _fake_run(tmp_path / "federated-fedavg", SITES, rounds=2)
    ok = read_federated_run(tmp_path / "federated-fedavg", "fedavg", SITES, exit_code=0, wall_seconds=12.0)
    assert ok.status == "completed" and [s.round for s in ok.rounds] == [0, 1, 2]
    assert ok.final.sites[SITES[1]]["strict-f1"] == 0.3 and ok.final.pooled["lenient-f1"] == pytest.approx(0.4)
    assert ok.run_dir == "runs/federated-fedavg" and ok.wall_seconds == 12.0
    failed = read_federated_run(tmp_path / "federated-fedavg", "fedavg", SITES, exit_code=1, wall_seconds=1.0)
    assert failed.status.startswith("failed: fedmedlora run exited with code 1") and len(failed.rounds) == 3


def test_read_federated_run_refuses_other_sites(tmp_path):
    _fake_run(tmp_path / "federated-fedavg", SITES[::-1], rounds=1)
    result = read_federated_run(tmp_path / "federated-fedavg", "fedavg", SITES, exit_code=0, wall_seconds=1.0)
    assert result.status.startswith("failed: the federation's sites") and not result.rounds


def test_federated_config_changes_only_strategy_and_where_it_writes(tmp_path):
    config = {"num-server-rounds": 3, "strategy.name": "fedavg", "run.results-dir": "/x", "run.name": "a"}
    out = federated_config(config, "fed-medlora-plus", tmp_path)
    assert out == {"num-server-rounds": 3, "strategy.name": "fed-medlora-plus", "run.results-dir": str(tmp_path),
                   "run.name": "federated-fed-medlora-plus"}


def test_a_stopped_federated_run_continues_from_its_state_on_resume(tmp_path, monkeypatch):
    from fedmedlora.experiment import federated
    from fedmedlora.run_state import STATE_DIR
    from fedmedlora.settings import load_toml_overrides

    launched = []

    def fake_launch(app_dir, configs, stream_to):
        launched.append(load_toml_overrides(configs[0]))
        stream_to.write("simulated\n")
        return 1

    monkeypatch.setattr(federated, "launch", fake_launch)
    _fake_run(tmp_path / "federated-fedavg", SITES, rounds=1)
    (tmp_path / "federated-fedavg.log").write_text("first attempt\n")
    (tmp_path / "federated-fedavg" / STATE_DIR).mkdir()
    (tmp_path / "federated-fedavg" / STATE_DIR / "round_1.json").write_text("{}")
    federated.run_federated(tmp_path, {"num-server-rounds": 3}, "fedavg", tmp_path, SITES, resume=True)
    assert launched[-1]["run.resume"] is True and not (tmp_path / "federated-fedavg.failed-1").exists()
    assert (tmp_path / "federated-fedavg.log").read_text() == "first attempt\nsimulated\n"  # appended
    (tmp_path / "federated-fedavg" / STATE_DIR / "round_1.json").unlink()  # nothing to continue from: set aside
    federated.run_federated(tmp_path, {"num-server-rounds": 3}, "fedavg", tmp_path, SITES, resume=True)
    assert "run.resume" not in launched[-1] and (tmp_path / "federated-fedavg.failed-1" / "metrics.jsonl").exists()


# --- what the settings train on ---------------------------------------------------------------------------------
def test_centralized_matches_the_federation_steps_per_round():
    settings = parse_run_config({"data.num-sites": 3, "train.local-steps": 30})
    assert centralized_settings(settings).train.local_steps == 90
    sampled = parse_run_config({"data.num-sites": 3, "strategy.clients-per-round": 2, "train.local-steps": 30})
    assert centralized_settings(sampled).train.local_steps == 60
    epochs = parse_run_config({"train.local-steps": 0, "train.local-epochs": 2.0})
    assert centralized_settings(epochs).train.local_epochs == 2.0  # over the pool: each example twice, as the sites
    assert centralized_settings(settings).as_dict() == {**settings.as_dict(), "train.local-steps": 90}


# --- validation before any work ---------------------------------------------------------------------------------
def _plan(tmp_path: Path, *extra: str):
    args = parser("fedmedlora experiment").parse_args(
        ["--run-config", "conf/ner-natural.toml", "--output", str(tmp_path), "--app-dir", str(ROOT), *extra])
    return make_plan(args, "cmd")


def test_plan_resolves_the_config_as_fedmedlora_run(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = _plan(tmp_path, "--name", "x", "-c", "num-server-rounds=2", "--settings", "federated,zero-shot")
    assert plan.which == ["zero-shot", "federated"] and plan.strategies == ["fedavg"]
    assert plan.settings.data.partitioning == "natural" and plan.settings.num_server_rounds == 2
    assert plan.out_dir == tmp_path.resolve() / "x" and Path(plan.config["run.results-dir"]).is_absolute()


def test_plan_names_every_problem_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "table.md").write_text("x")
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, "--name", "taken", "--settings", "zero-shot,federate", "--strategies", "fedavg,fedbogus",
              "-c", "evaluate.server=false")
    text = str(err.value)
    assert "--settings 'zero-shot,federate'" in text and "already holds an experiment" in text
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, "--name", "new", "--strategies", "fedavg,fedbogus", "-c", "evaluate.server=false")
    text = str(err.value)
    assert "unknown strategy 'fedbogus'" in text and "evaluate.server" in text
    with pytest.raises(ConfigError, match="train.local-stepz"):
        _plan(tmp_path, "--name", "new", "-c", "train.local-stepz=3")


def test_resume_needs_the_same_run_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    plan = _plan(tmp_path, "--name", "x")
    (tmp_path / "x").mkdir()
    earlier = {**plan.settings.as_dict(), "train.local-steps": 7, "evaluate.retired-option": 1}
    del earlier["strategy.norm-bound"]
    (tmp_path / "x" / "config.json").write_text(json.dumps({"run-config": earlier, "command": "first"}))
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, "--name", "x")
    assert "add --resume to continue it" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, "--name", "x", "--resume")
    assert "key 'train.local-steps' = 30, but" in str(err.value) and "was run with 7" in str(err.value)
    assert "norm-bound" not in str(err.value)  # a key the earlier code did not have is named, not refused
    resumed = _plan(tmp_path, "--name", "x", "--resume", "-c", "train.local-steps=7")
    assert resumed.resume and resumed.earlier["command"] == "first"
    assert "evaluate.retired-option, strategy.norm-bound" in capsys.readouterr().err
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("not an experiment")
    with pytest.raises(ConfigError, match="has no config.json"):
        _plan(tmp_path, "--name", "y", "--resume")


def test_main_exits_2_on_a_bad_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = main(["-c", "conf/ner-natural.toml", "-c", "data.num-sites=3", "--name", "x", "--output", str(tmp_path),
                 "--settings", "zero-shot"])
    assert code == 2
    assert "natural partitioning" in capsys.readouterr().err  # the sites are checked before any model loads
    assert not (tmp_path / "x").exists()


def test_cli_has_the_experiment_command(capsys):
    from fedmedlora.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["experiment", "--help"])
    assert "--strategies" in capsys.readouterr().out


# --- end to end ------------------------------------------------------------------------------------------------------
TINY = ("data.max-train-examples=32 data.max-eval-examples=16 train.local-steps=2 num-server-rounds=2 "
        "train.batch-size=8")


@pytest.mark.slow
def test_tiny_experiment_every_setting(tmp_path, monkeypatch):
    """Zero-shot, single-site and centralized in process, FedAvg through `fedmedlora run`, on 2 natural sites."""
    monkeypatch.chdir(ROOT)
    first = ["-c", "conf/ner-natural.toml", "-c", TINY, "--name", "tiny", "--output", str(tmp_path)]
    code = main([*first, "--settings", "zero-shot,single-site,centralized"])
    out = tmp_path / "tiny"
    assert code == 0, (out / "table.md").read_text() if (out / "table.md").exists() else "no table"
    zero_shot_record = (out / "runs" / "zero-shot" / "metrics.jsonl").read_text()
    # The federated model added later with --resume (the baselines are kept, not rerun), past a leftover folder of an
    # attempt that never saved a state (kept aside, not overwritten).
    (out / "runs" / "federated-fedavg").mkdir()
    (out / "runs" / "federated-fedavg" / "metrics.jsonl").write_text("{}\n")
    code = main([*first, "--settings", "zero-shot,federated", "--resume"])
    assert code == 0, (out / "table.md").read_text()
    assert {p.name for p in out.iterdir()} == {"config.json", "table.md", "results.csv", "models.json",
                                               "f1_per_round.png", "runs"}
    assert (out / "runs" / "federated-fedavg.failed-1" / "metrics.jsonl").read_text() == "{}\n"
    assert (out / "runs" / "zero-shot" / "metrics.jsonl").read_text() == zero_shot_record
    config = json.loads((out / "config.json").read_text())
    assert config["run-config"]["num-server-rounds"] == 2 and config["centralized"]["train.local-steps"] == 4
    assert [s["name"] for s in config["sites"]] == SITES
    assert config["settings"] == ["zero-shot", "single-site", "centralized", "federated"] and len(config["commands"]) == 2

    table = (out / "table.md").read_text()
    assert table.startswith("# Experiment `tiny`: zero-shot, single-site, centralized, federated\n")
    assert "; strategies fedavg." in table  # the header describes the whole folder, not only the last command
    assert "Command (from the project root): `python -m fedmedlora.experiment -c conf/ner-natural.toml" in table
    assert "Continued with: `python -m fedmedlora.experiment -c conf/ner-natural.toml" in table
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [(a.strip(), b.strip()) for a, b in rows[1:]] == [
        ("zero-shot", "-"), ("single-site", "bc5cdr"), ("single-site", "ncbi_disease"),
        ("centralized", "all sites pooled"), ("federated", "fedavg")]

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pooled = {(r["setting"], r["model"], int(r["round"])): float(r["value"]) for r in rows
              if r["eval_site"] == "pooled" and r["metric"] == "strict-f1"}
    assert {k[:2] for k in pooled} == {("zero-shot", "-"), ("single-site", "bc5cdr"), ("single-site", "ncbi_disease"),
                                       ("centralized", "all sites pooled"), ("federated", "fedavg")}
    # Same sites, same round-0 adapter, same scoring: the simulation's round 0 is the zero-shot score exactly.
    zero = pooled[("zero-shot", "-", 0)]
    assert pooled[("federated", "fedavg", 0)] == zero and pooled[("centralized", "all sites pooled", 0)] == zero
    assert all(("federated", "fedavg", r) in pooled and ("single-site", "bc5cdr", r) in pooled for r in (1, 2))
    examples = {(r["setting"], r["model"], r["eval_site"]) for r in rows if r["metric"] == "examples"
                and r["value"] == "16.0"}
    assert ("federated", "fedavg", "ncbi_disease") in examples
    assert ("centralized", "all sites pooled", "bc5cdr") in examples

    def train_records(name: str) -> list[dict]:
        lines = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train"] for line in lines[1:]]

    assert [(t["train-steps"], t["num-examples"]) for t in train_records("single-site-1-ncbi_disease")] == [(2, 32)] * 2
    assert [(t["train-steps"], t["num-examples"]) for t in train_records("centralized")] == [(4, 64)] * 2
    federated = read_metrics_clients(out / "runs" / "federated-fedavg")
    assert [[c[:3] for c in r] for r in federated] == [[(0, 2, 32), (1, 2, 32)]] * 2  # single-site's local work
    # Round 1 starts every client from the round-0 adapter: same data, seed and trainer as single-site's round 1
    # (only the float16 wire rounds the adapter the client receives).
    for site_id, name in enumerate(SITES):
        alone = train_records(f"single-site-{site_id}-{name}")[0]["train-loss"]
        assert federated[0][site_id][3] == pytest.approx(alone, rel=1e-4)
    assert json.loads((out / "runs" / "federated-fedavg" / "summary.json").read_text())["status"] == "completed"
    assert (out / "runs" / "centralized" / "peft_2" / "adapter_model.safetensors").exists()
    assert (out / "f1_per_round.png").stat().st_size > 10_000


def read_metrics_clients(run_dir: Path) -> list[list[tuple[int, int, int, float]]]:
    from fedmedlora.recorder import read_metrics

    return [sorted((int(c["site"]), int(c["train-steps"]), int(c["num-examples"]), float(c["train-loss"]))
                   for c in record["clients"])
            for record in read_metrics(run_dir) if record["round"] > 0]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
