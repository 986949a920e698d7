"""Site-local data: each node reads its own file only, the server reads none, and evaluation is federated.

A federation runs in this process (the real ServerApp and ClientApp code; the in-process grid delivers Flower
messages) with three sites that each hold one CoNLL file named in their node config, as SuperNodes started with
`--node-config 'data-path="..."'` would. Python's audit hook records every file opened under the data folders and
the bundled data, and who opened it (the server, or the site whose ClientApp call was running).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmedlora import client_app
from fedmedlora.data.own_site import own_site
from fedmedlora.data.files import DataFormatError
from fedmedlora.federation.node_site import node_site
from fedmedlora.federation.roster import build_roster
from fedmedlora.federation.site_report import site_records
from fedmedlora.job import Job
from fedmedlora.launch.grid import InProcessGrid, node_context, set_task_identity
from fedmedlora.model.adapter import load_adapter_state
from fedmedlora.recorder import read_metrics
from fedmedlora.settings import ConfigError, parse_run_config
from fedmedlora.tasks.token_classification import TokenClassificationTask
from fedmedlora_data import DATA_ROOT, write_site_file

from helpers import TINY_NER

# --- who opened which file --------------------------------------------------------------------------------------
AUDIT: dict = {"roots": (), "who": "server", "opened": []}


def _audit(event: str, args: tuple) -> None:
    if event == "open" and AUDIT["roots"] and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(AUDIT["roots"]):
            AUDIT["opened"].append((AUDIT["who"], path))


sys.addaudithook(_audit)  # inert until a test sets AUDIT["roots"]; audit hooks cannot be removed


def traced(app):
    """The ClientApp, with the audit knowing whose call is running."""
    def call(msg, context):
        AUDIT["who"] = context.node_config.get("site-name", f"node {context.node_id}")
        try:
            return app(msg, context)
        finally:
            AUDIT["who"] = "server"
    return call


# --- three sites, one CoNLL file each ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hospitals")
    files = {}
    for name, corpus, skip in (("general", "bc5cdr", 0), ("oncology", "ncbi_disease", 0), ("pharmacy", "bc5cdr", 400)):
        files[name] = write_site_file(root / name / f"{name}.tsv", corpus, skip, 40)
    return files


RUN = {**TINY_NER, "num-server-rounds": 3, "data.max-train-examples": 0, "data.max-eval-examples": 0,
       "data.datasets": "/nonexistent/the-server-must-not-read-this.tsv",  # sites name their own data
       "evaluate.every": 2, "evaluate.sites": 2, "evaluate.batch-size": 16}


@pytest.fixture(scope="module")
def own_run(site_files, tmp_path_factory):
    from fedmedlora.server_app import run_server

    out = tmp_path_factory.mktemp("runs")
    config = {**RUN, "run.results-dir": str(out), "run.name": "own"}
    node_configs = [{"data-path": str(path), "site-name": name, "cache-dir": str(out / f"cache-{name}")}
                    for name, path in site_files.items()]
    grid = InProcessGrid(traced(client_app.app), config, 3, node_configs=node_configs)
    AUDIT.update(roots=(str(next(iter(site_files.values())).parent.parent), str(DATA_ROOT)), opened=[])
    set_task_identity(grid.run_id, InProcessGrid.SERVER_NODE_ID)
    try:
        from flwr.app import Context

        result = run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                          run_config=dict(config)))
    finally:
        opened = list(AUDIT["opened"])
        AUDIT.update(roots=(), opened=[])
    return SimpleNamespace(run_dir=Path(result["run-dir"]), records=read_metrics(result["run-dir"]), opened=opened,
                           config=config, grid=grid)


@pytest.mark.slow
def test_each_site_reads_only_its_own_file_and_the_server_reads_none(own_run, site_files):
    by_who: dict[str, set[str]] = {}
    for who, path in own_run.opened:
        by_who.setdefault(who, set()).add(path)
    assert "server" not in by_who, f"the server opened {by_who.get('server')}"
    for name, path in site_files.items():
        assert by_who[name] == {str(path)}, (name, by_who[name])  # its own file, and no bundled data


@pytest.mark.slow
def test_sites_json_and_label_set_come_from_the_sites_replies(own_run, site_files):
    settings = parse_run_config(own_run.config)
    sites = json.loads((own_run.run_dir / "sites.json").read_text())
    assert [s["name"] for s in sites] == ["general", "oncology", "pharmacy"]  # no partition-id: ordered by name
    for entry in sites:
        expected = own_site(settings, [site_files[entry["name"]]], entry["name"])
        assert entry["kind"] == "own" and entry["sources"] == {entry["name"]: 40}
        assert (entry["train-examples"], entry["val-examples"], entry["test-examples"]) == (
            len(expected.train), len(expected.val), len(expected.test))
    config = json.loads((own_run.run_dir / "config.json").read_text())
    assert config["labels"] == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]  # oncology: Disease only


@pytest.mark.slow
def test_every_site_trains_its_own_rows_every_round(own_run, site_files):
    settings = parse_run_config(own_run.config)
    sites = json.loads((own_run.run_dir / "sites.json").read_text())
    for record in own_run.records[1:]:
        assert record["usable"] == 3 and not record["excluded"]
        trained = {c["site"]: c["num-examples"] for c in record["clients"]}
        assert trained == {s["site"]: s["train-examples"] for s in sites}
        assert all(c["pid"] == os.getpid() for c in record["clients"])  # process figures travel with the reply
    assert sum(c["train-examples-seen"] for c in own_run.records[1]["clients"]) == 3 * 3 * settings.train.batch_size


@pytest.mark.slow
def test_federated_evaluation_merges_site_counts_into_the_pooled_scores(own_run, site_files):
    from safetensors.numpy import load_file

    records = {r["round"]: r for r in own_run.records}
    assert [r for r in records if "server-eval" in records[r]] == [0, 2, 3]  # round 0, every 2nd, the last
    settings = parse_run_config(own_run.config)
    names = ["general", "oncology", "pharmacy"]
    sites = []
    for index, name in enumerate(names):  # the test may read every file: it plays all sites at once
        site = own_site(settings, [site_files[name]], name)
        site.site_id = index
        sites.append(site)
    job = Job(settings, sites=sites, vocabulary=["Chemical", "Disease"])
    for server_round in (0, 2, 3):
        evaluation = records[server_round]["server-eval"]
        assert evaluation["by"] == "sites" and len(evaluation["sampled"]) == 2 and not evaluation["failures"]
        state = load_file(str(own_run.run_dir / f"peft_{server_round}" / "adapter_model.safetensors"))
        load_adapter_state(job.resident().model, state)
        direct = job.evaluate(settings.evaluate.split, evaluation["sampled"])
        assert evaluation["pooled"] == direct["pooled"]  # exact: counts merged = the pooled evaluation
        assert evaluation["sites"] == direct["sites"]
    samples = {r: tuple(records[r]["server-eval"]["sampled"]) for r in (0, 2, 3)}
    assert len(set(samples.values())) > 1  # a fresh sample each evaluated round (seeded by run.seed and round)
    summary = json.loads((own_run.run_dir / "summary.json").read_text())
    assert summary["evaluated-rounds"] == [0, 2, 3]
    assert summary["processes-per-site"]["0"]["messages"] == 1 + 3 + sum(0 in s for s in samples.values())


def test_a_site_reply_to_the_query_holds_names_and_counts_only(site_files):
    context = node_context(TINY_NER, 0, 3)
    context.node_config.clear()
    context.node_config.update({"data-path": str(site_files["oncology"]), "cache": False})
    set_task_identity(1, 1)
    from flwr.app import Message, MessageType

    from fedmedlora.federation.process_stats import MessageClock

    query = Message(RecordDict({"config": ConfigRecord({"describe": "site"})}), dst_node_id=1,
                    message_type=MessageType.QUERY)
    reply = client_app.app(query, context)
    assert set(reply.content.keys()) == {"site", "counts", "metrics"}
    assert dict(reply.content["site"]) == {"name": "oncology", "kind": "own", "partition-id": -1,
                                           "vocabulary": ["Disease"]}
    counts = dict(reply.content["counts"])
    allowed = {f"{split}-{what}" for split in ("train", "val", "test") for what in ("examples", "entities/Disease")}
    assert set(counts) <= allowed | {"sources/oncology"} and all(isinstance(v, int) for v in counts.values())
    assert counts["train-examples"] + counts["val-examples"] + counts["test-examples"] == 40 == counts[
        "sources/oncology"]
    metrics = dict(reply.content["metrics"])
    assert set(metrics) == set(MessageClock().metrics()) and all(isinstance(v, (int, float)) for v in metrics.values())
    assert str(site_files["oncology"].parent) not in json.dumps({k: dict(v) for k, v in reply.content.items()})


def _reply(node: int, name: str, vocabulary: list[str], partition: int = -1, kind: str = "own"):
    description, counts = site_records(_fake_site(name), "ner", kind, partition,
                                       vocabulary)
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False,
                           content=RecordDict({"site": description, "counts": counts,
                                               "metrics": MetricRecord({"pid": 1})}))


def _fake_site(name: str):
    from fedmedlora.data.sites import Site

    row = {"uid": "u", "source": name, "tokens": ["a"], "tags": ["O"]}
    return Site(-1, name, [row, row], [row], [row], {name: 4})


def test_the_roster_places_sites_and_agrees_the_label_set():
    settings = parse_run_config({"data.num-sites": 3})
    replies = [_reply(7, "zeta", ["Disease"]), _reply(5, "alpha", ["Chemical"]), _reply(9, "mid", [], partition=0)]
    roster = build_roster(settings, replies, [5, 7, 9], TokenClassificationTask.union_vocabulary)
    assert [(s.name, s.index, s.node) for s in roster.sites] == [("mid", 0, 9), ("alpha", 1, 5), ("zeta", 2, 7)]
    assert roster.vocabulary == ["Chemical", "Disease"]
    assert roster.message_config() == {"site-nodes": ["9", "5", "7"], "labels": ["Chemical", "Disease"]}
    fixed = build_roster(parse_run_config({"data.num-sites": 3, "data.labels": "Disease,Chemical,Gene"}), replies,
                         [5, 7, 9], TokenClassificationTask.union_vocabulary)
    assert fixed.vocabulary == ["Disease", "Chemical", "Gene"]  # data.labels wins, in its order


@pytest.mark.parametrize("replies, nodes, config, message", [
    ([_reply(1, "a", ["X"]), _reply(2, "a", ["X"])], [1, 2], {"data.num-sites": 2}, "two sites are named 'a'"),
    ([_reply(1, "a", ["X"], 1), _reply(2, "b", ["X"], 1)], [1, 2], {"data.num-sites": 2},
     "two SuperNodes have node config partition-id = 1"),
    ([_reply(1, "a", ["X"]), _reply(2, "b", ["Y"])], [1, 2], {"data.num-sites": 2, "data.labels": "X"},
     "key 'data.labels' = 'X': site 'b' has 'Y' in its data"),
    ([_reply(1, "a", ["X"])], [1, 2], {"data.num-sites": 2}, "SuperNode 2 did not describe its site"),
    ([_reply(1, "a", ["X"]), _reply(2, "b", ["X"])], [1, 2], {"data.num-sites": 3, "strategy.min-replies": 3},
     r"key 'data.num-sites' = 3, but 2 sites described themselves \(strategy.min-replies = 3 needed to start\)"),
    ([_reply(1, "a", ["X"]), _reply(2, "b", ["X"])], [1, 2], {"data.num-sites": 1},
     "key 'data.num-sites' = 1, but 2 SuperNodes describe a site"),
])
def test_roster_problems_stop_the_run_before_training(replies, nodes, config, message):
    with pytest.raises(ConfigError, match=message):
        build_roster(parse_run_config(config), replies, nodes, TokenClassificationTask.union_vocabulary)


def test_a_run_starts_with_the_sites_that_are_there():
    # 2 of 3 sites connected within strategy.node-wait: enough for strategy.min-replies = 1 (docs/availability.md)
    roster = build_roster(parse_run_config({"data.num-sites": 3}), [_reply(1, "a", ["X"]), _reply(2, "b", ["Y"])],
                          [1, 2], TokenClassificationTask.union_vocabulary)
    assert [site.name for site in roster.sites] == ["a", "b"] and roster.vocabulary == ["X", "Y"]


def test_a_site_that_cannot_read_its_data_is_named_with_its_error():
    failed = SimpleNamespace(metadata=SimpleNamespace(src_node_id=4), has_error=lambda: True,
                             error=SimpleNamespace(reason="DataFormatError: /data/x.tsv:17: tag 'B_X' is not BIO"))
    with pytest.raises(ConfigError, match=r"SuperNode 4 cannot serve its site:\n.*x.tsv:17: tag 'B_X' is not BIO"):
        build_roster(parse_run_config({"data.num-sites": 1}), [failed], [4],
                     TokenClassificationTask.union_vocabulary)


@pytest.mark.parametrize("node_config, message", [
    ({}, "node config names no data"),
    ({"data-path": "relative/site.tsv"}, "is relative; give absolute paths"),
    ({"data-path": "/nonexistent/site.tsv"}, "file '/nonexistent/site.tsv' does not exist"),
    ({"data-path": 3}, "expected a quoted path"),
    ({"partition-id": 3, "num-partitions": 3}, "'partition-id' = 3: must be below num-partitions = 3"),
])
def test_node_config_problems_name_the_key(node_config, message):
    with pytest.raises((ConfigError, DataFormatError), match=message):
        node_site(node_config, parse_run_config({}))


def test_own_split_is_cut_with_the_run_seed_and_the_site_name(site_files):
    settings = parse_run_config({"data.val-fraction": 0.2, "data.test-fraction": 0.1})
    a = own_site(settings, [site_files["general"]], "general")
    b = own_site(settings, [site_files["general"]], "general")
    c = own_site(parse_run_config({"data.val-fraction": 0.2, "data.test-fraction": 0.1, "run.seed": 1}),
                 [site_files["general"]], "general")
    assert (len(a.train), len(a.val), len(a.test)) == (28, 8, 4)
    assert [r["uid"] for r in a.test] == [r["uid"] for r in b.test] != [r["uid"] for r in c.test]
