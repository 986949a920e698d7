"""A SuperNode killed during round 2 of a 3-round deployment run (SuperLink and three SuperNodes on 127.0.0.1): the
round closes on the survivors, the loss is one failure recorded for the node that was sent the instruction, the last
round runs on the two that are left, and the run completes. Flower notices the lost node by its missing heartbeat
(30 s interval, patience 2 in flwr 1.42, not configurable from the command line), so this test takes about a
minute longer than the run itself; strategy.node-wait bounds the only other waits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fedmedlora.recorder import read_metrics

from deployment import LocalDeployment

pytestmark = pytest.mark.slow

RUN = {"num-server-rounds": 3, "data.num-sites": 3, "data.max-train-examples": 24, "data.max-eval-examples": 8,
       "data.max-length": 48, "train.local-steps": 2, "train.batch-size": 8, "strategy.node-wait": 120.0}


def wait_for(condition, timeout: float, what: str, deployment: LocalDeployment) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline or (deployment.run is not None and deployment.run.poll() is not None):
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n--- run log ---\n"
                                 f"{deployment.log('run')[-4000:]}\n--- superlink ---\n"
                                 f"{deployment.log('superlink')[-3000:]}")
        time.sleep(0.5)


def test_a_killed_supernode_is_one_failure_for_its_node_and_the_run_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "results" / "lost"
    deployment = LocalDeployment(tmp_path, sites=3)
    try:
        deployment.start()
        deployment.submit({**RUN, "run.results-dir": str(run_dir.parent), "run.name": run_dir.name})
        metrics = run_dir / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, 600, "round 1",
                 deployment)
        node_of_site = {c["site"]: c["node"] for c in read_metrics(run_dir)[1]["clients"]}
        assert sorted(node_of_site) == [0, 1, 2]
        deployment.kill_node(1)  # round 2's instructions are out: site 1 will never answer its own
        lost = node_of_site[1]
        killed_at = time.time()
        assert deployment.run.wait(timeout=600) == 0, deployment.log("run")[-4000:]
        finished_in = time.time() - killed_at
    finally:
        deployment.stop()

    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    round_2, round_3 = records[2], records[3]
    # the loss, once, under the lost node's id (not the SuperLink's 1), and the round aggregated the two others
    assert round_2["failures"] == 1 and [e["node"] for e in round_2["excluded"]] == [lost]
    assert round_2["usable"] == 2 and round_2["aggregated"] is True
    assert sorted(round_2["weights"]) == sorted(str(node_of_site[s]) for s in (0, 2))
    # the last round did not wait for the lost node: it sampled the two connected ones and both answered
    assert sorted(round_3["train-nodes"]) == sorted(node_of_site[s] for s in (0, 2))
    assert round_3["failures"] == 0 and round_3["usable"] == 2 and round_3["train-connected"] == 2
    assert records[-1]["total-failures"] == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-aggregated"] == 3
    assert finished_in < 300, f"the run took {finished_in:.0f} s after the kill"
