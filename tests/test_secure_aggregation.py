"""Why SecAgg+ is not offered (docs/privacy.md): Flower 1.42's SecAgg+ speaks the legacy strategy API on the server
and the legacy fit-reply layout on the client, neither of which this app's Message-API strategies and replies use.
These tests pin those facts, so that a Flower release that lifts them fails here and the option can be reconsidered.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, MetricRecord, RecordDict
from flwr.compat.common import recorddict_compat
from flwr.server.workflow import SecAggPlusWorkflow

from fedmedlora.launch.grid import NodeIdsGrid
from fedmedlora.recorder import RunRecorder
from fedmedlora.run_config import load_settings
from fedmedlora.strategies import build_strategy
from fedmedlora.wire import to_array_record


def test_the_secaggplus_workflow_needs_a_legacy_context_and_strategy(tmp_path) -> None:
    workflow = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(TypeError, match="Expect a LegacyContext"):
        workflow(NodeIdsGrid(3), context)
    # LegacyContext.strategy is called through the legacy API (configure_fit / aggregate_fit over FitRes);
    # this app's strategies are Message-API ones (configure_train / aggregate_train over Messages)
    strategy = build_strategy(load_settings({}), RunRecorder(tmp_path), {"w": np.zeros(1, np.float32)})
    assert hasattr(strategy, "aggregate_train")
    assert not hasattr(strategy, "configure_fit") and not hasattr(strategy, "aggregate_fit")


def test_the_secaggplus_mod_reads_a_legacy_fit_reply() -> None:
    # secaggplus_mod masks what compat.recorddict_to_fitres finds in the ClientApp's reply
    reply = RecordDict({"arrays": to_array_record({"w": np.zeros(2, np.float32)}, "float16"),
                        "metrics": MetricRecord({"num-examples": 4})})
    with pytest.raises(KeyError, match="fitres.parameters"):
        recorddict_compat.recorddict_to_fitres(reply, keep_input=True)
