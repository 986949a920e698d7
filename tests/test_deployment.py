"""A real Flower 1.42 deployment on 127.0.0.1: a SuperLink and three SuperNodes, TLS and SuperNode authentication on.

Each SuperNode is its own process tree with its own FLWR_HOME and working directory and is given only its own site's
CoNLL file, in a folder of its own; the SuperLink (and the ServerApp it starts) is given none. Every Python process
of the deployment loads an audit hook (a sitecustomize on PYTHONPATH) that logs each file it opens under the sites'
folders or the bundled data, tagged with whose process it is. Two rounds of MiniLM + LoRA run, submitted with
`fedmedlora submit` through a TLS connection; certificates and site keys are generated here. Every process is
stopped by its PID (process group) at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from fedmedlora.data.own_site import own_site
from fedmedlora.launch.certs import write_site_key
from fedmedlora.launch.deploy import supernode_command
from fedmedlora.launch.local_deployment import LocalDeployment, SiteSpec, free_port
from fedmedlora.recorder import read_metrics
from fedmedlora.settings import parse_run_config
from fedmedlora_data import DATA_ROOT, write_site_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SITECUSTOMIZE = '''
import os, sys
_ROOTS = tuple(r for r in os.environ.get("FEDMEDLORA_AUDIT_ROOTS", "").split(os.pathsep) if r)
_LOG = os.environ.get("FEDMEDLORA_AUDIT_LOG", "")
_WHO = os.environ.get("FEDMEDLORA_AUDIT_WHO", "unknown")

def _audit(event, args):
    if event != "open" or not _ROOTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path.startswith(_LOG) or not path.startswith(_ROOTS) or path.endswith((".py", ".pyc")):
        return  # code (the fedmedlora_data package itself) is not data
    with open(os.path.join(_LOG, f"{_WHO}.{os.getpid()}"), "a") as fh:
        fh.write(path + "\\n")

if _ROOTS and _LOG:
    sys.addaudithook(_audit)
'''

SITES = {"general": ("bc5cdr", 0), "oncology": ("ncbi_disease", 0), "pharmacy": ("bc5cdr", 400)}
RUN = {"num-server-rounds": 2, "train.local-steps": 2, "train.batch-size": 8, "evaluate.every": 2,
       "evaluate.batch-size": 16, "data.datasets": "/nonexistent/the-server-must-not-read-this.tsv"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    data_root, audit = root / "hospitals", root / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(SITECUSTOMIZE)
    files = {}
    for name, (corpus, skip) in SITES.items():
        files[name] = data_root / name / f"{name}.tsv"
        write_site_file(files[name], corpus, skip, 40)
    env = {"PYTHONPATH": os.pathsep.join([str(audit), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "FEDMEDLORA_AUDIT_ROOTS": os.pathsep.join([str(data_root), str(DATA_ROOT)]),
           "FEDMEDLORA_AUDIT_LOG": str(audit), "FEDMEDLORA_AUDIT_WHO": "superlink",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    sites = [SiteSpec(name, data=[str(path)], env={"FEDMEDLORA_AUDIT_WHO": name}) for name, path in files.items()]
    results = root / "results"
    fed = LocalDeployment(root / "federation", sites, tls=True, auth=True, env=env, startup_timeout=180)
    with fed:
        start = time.time()
        code = fed.submit(ROOT, {**RUN, "run.results-dir": str(results), "run.name": "deployed"})
        seconds = time.time() - start
        refused = _unregistered_node_is_refused(fed, files["general"])
    processes = list(fed.processes.values())
    yield {"code": code, "output": fed.last_output.getvalue(), "run_dir": results / "deployed", "files": files,
           "audit": audit, "processes": processes, "seconds": seconds, "refused": refused, "fed": fed}


def _unregistered_node_is_refused(fed: LocalDeployment, data: Path) -> tuple[int | None, str]:
    """A fourth SuperNode whose key was never registered: the SuperLink must refuse it."""
    key, _ = write_site_key(fed.certs, "intruder")
    folder = fed.root / "intruder"
    command = supernode_command(superlink=fed.address, data=[str(data)], name="intruder",
                                root_certificates=fed.certs / "ca.crt", auth_key=key, port=free_port())
    proc = fed._start("intruder", command, folder, fed.env(folder / "home", FEDMEDLORA_AUDIT_WHO="intruder"))
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    return proc.poll(), fed.log("intruder", 20)


def test_the_deployed_run_completes_over_tls_with_authenticated_supernodes(deployment):
    assert deployment["code"] == 0, deployment["output"][-4000:]
    summary = json.loads((deployment["run_dir"] / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-completed"] == 2
    assert [r["round"] for r in read_metrics(deployment["run_dir"])] == [0, 1, 2]
    link_log = deployment["fed"].log("superlink", 400)
    assert "https://127.0.0.1" in link_log  # TLS on
    code, log = deployment["refused"]
    assert code not in (None, 0) and "Failed to activate" in log, log  # authentication on


def test_each_site_trained_its_own_data(deployment):
    run_dir = deployment["run_dir"]
    settings = parse_run_config(RUN)
    sites = json.loads((run_dir / "sites.json").read_text())
    assert [(s["name"], s["kind"]) for s in sites] == [("general", "own"), ("oncology", "own"), ("pharmacy", "own")]
    expected = {s["site"]: len(own_site(settings, [deployment["files"][s["name"]]], s["name"]).train) for s in sites}
    for record in read_metrics(run_dir)[1:]:
        assert record["usable"] == 3 and not record["excluded"]
        assert {c["site"]: c["num-examples"] for c in record["clients"]} == expected
    evaluations = [r["server-eval"] for r in read_metrics(run_dir) if "server-eval" in r]
    assert [e["sampled"] for e in evaluations] == [[0, 1, 2], [0, 1, 2]] and all("pooled" in e for e in evaluations)


def test_no_process_read_another_sites_file(deployment):
    opened: dict[str, set[str]] = {}
    for log in deployment["audit"].glob("*.*"):
        if log.suffix == ".py":
            continue
        who = log.name.rsplit(".", 1)[0]
        opened.setdefault(who, set()).update(log.read_text().split())
    assert opened.get("superlink", set()) == set(), "the SuperLink or ServerApp opened site or bundled data"
    for name, path in deployment["files"].items():
        assert opened.get(name) == {str(path)}, (name, opened.get(name))
    assert set(opened) <= {"superlink", "intruder", *deployment["files"]}


def test_base_model_loads_and_process_starts_are_reported_per_site(deployment):
    summary = json.loads((deployment["run_dir"] / "summary.json").read_text())
    per_site = summary["processes-per-site"]
    assert sorted(per_site) == ["0", "1", "2"]
    for entry in per_site.values():
        # query, round-0 evaluation, 2 x train, final evaluation: one fresh ClientApp process per message
        assert entry["messages"] == 5 and entry["processes"] == 5
        assert entry["model-loads"] == 4  # every message but the query loads the base model
        assert entry["model-load-seconds"] > 0 and entry["startup-seconds"] > 0
    last = read_metrics(deployment["run_dir"])[-1]
    assert last["processes"]["process-starts"] == 6 and last["processes"]["model-loads"] == 6
    assert all(c["data-from-cache"] == 1 for c in last["clients"])  # rows and tokens from the site's own disk


def test_every_process_was_stopped(deployment):
    for proc in deployment["processes"]:
        assert proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
