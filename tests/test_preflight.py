"""Preflight: every problem at once, the sites it forms are the run's, and run folders are never reused.

The user-facing messages of each kind of bad input are checked case by case in test_reliability.py; here, what the
apps rely on."""

from __future__ import annotations

import json

import pytest

from fedmedlora.data.sites import load_sites
from fedmedlora.job import Job
from fedmedlora.preflight import PreflightError, check_run, require
from fedmedlora.recorder import RunRecorder
from fedmedlora.run_config import load_settings
from fedmedlora.run_folder import HALF_WRITTEN, HOLDS_RUN, NEW, run_dir_state


def test_the_default_run_passes_and_its_sites_are_the_runs(tmp_path):
    settings = load_settings({"run.results-dir": str(tmp_path), "run.name": "x"})
    report = check_run(settings)
    assert report.problems == []
    uids = [[r["uid"] for r in site.train + site.val + site.test] for site in report.sites]
    assert uids == [[r["uid"] for r in site.train + site.val + site.test] for site in load_sites(settings)]


def test_the_job_takes_the_preflight_sites_without_reading_the_data_again(tmp_path, monkeypatch):
    settings = load_settings({"run.results-dir": str(tmp_path)})
    sites = require(settings).sites
    monkeypatch.setattr("fedmedlora.job.load_sites", lambda *a, **k: pytest.fail("data read twice"))
    job = Job(settings, sites)
    assert job.sites is sites and "B-Disease" in job.labels


def test_model_data_and_results_problems_come_together(tmp_path):
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "bad.tsv"
    bad.write_text("Aspirin\tB-Chemical\nlonely\n")
    settings = load_settings({"lora.target-modules": "q_proj", "data.datasets": f"{bad},ncbi_disese",
                              "run.results-dir": str(tmp_path / "a-file" / "runs")})
    with pytest.raises(PreflightError) as info:
        require(settings)
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert [p.split(":")[0].split(" = ")[0] for p in problems] == [
        "key 'lora.target-modules'", str(bad), "key 'data.datasets'", "key 'run.results-dir'"]
    assert str(info.value).startswith("the run cannot start (4 problems):")


def test_run_folder_states(tmp_path):
    assert run_dir_state(tmp_path / "absent") == (NEW, [])
    (tmp_path / "empty").mkdir()
    assert run_dir_state(tmp_path / "empty") == (NEW, [])
    (tmp_path / "died").mkdir()
    (tmp_path / "died" / "config.json").write_text("{}")
    assert run_dir_state(tmp_path / "died") == (HALF_WRITTEN, ["config.json"])
    (tmp_path / "died" / "metrics.jsonl").write_text("{}\n")
    assert run_dir_state(tmp_path / "died")[0] == HOLDS_RUN


def test_the_recorder_refuses_a_half_written_folder_and_overwrites_nothing(tmp_path):
    died = tmp_path / "died"
    died.mkdir()
    (died / "config.json").write_text('{"started": "yesterday"}')
    settings = load_settings({"run.results-dir": str(tmp_path), "run.name": "died"})
    with pytest.raises(FileExistsError, match="holds the start of a run that stopped before round 0 ended"):
        RunRecorder.create(settings, {})
    assert json.loads((died / "config.json").read_text()) == {"started": "yesterday"}
    (tmp_path / "fresh").mkdir()  # an empty folder made beforehand is fine
    recorder = RunRecorder.create(load_settings({"run.results-dir": str(tmp_path), "run.name": "fresh"}), {})
    assert (recorder.run_dir / "config.json").is_file() and recorder.run_dir == (tmp_path / "fresh").resolve()
