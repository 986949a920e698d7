"""Issue 14's reliability table: every bad input a careful user or an adversary might give, and what they see.

Each case does what a user would do (mostly `fedmedlora run` with a bad run config, data file, model or results
folder, called in this process; some through the strategies' reply screening, or a whole run) and returns what the
user sees: the message, the exit code, the seconds it took. A case is *handled* when the message contains the
fragments that make it actionable (the key, file and line, what to write instead) and, for `fedmedlora run`, the
exit code is 2 (a config error, before Flower starts).

    python -m pytest -q tests/test_reliability.py          # every case must be handled
    python tests/reliability_cases.py --write results/reliability.md   # the table (same cases, same checks)

Add a case with `@case(group, what was tried, fragment, ...)` on a function `(tmp: Path) -> Seen`. The groups are
listed in GROUPS, in table order; "Poisoning and leaks" is kept for the cases of issue 14 items 3-6.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TMP = "<tmp>"  # temporary folders in messages, so the table reads the same on every machine

GROUPS = (
    "Run config",
    "Model",
    "Data files and names",
    "Sites",
    "Results and run folders",
    "Client replies",
    "Poisoning and leaks",  # issue 14 items 3-6 (another branch): add those cases here as they land
    "End to end",
)


@dataclass
class Seen:
    """What the user sees: the message (stderr of a command, or the console line / record of a run), its exit code
    where a command ran, and how long the case took (set by `run_case`)."""

    message: str
    code: int | None = None
    seconds: float = 0.0


@dataclass
class Case:
    group: str
    tried: str
    fragments: tuple[str, ...]
    run: Callable[[Path], Seen]
    code: int | None = 2  # the exit code a handled case gives (None: no command ran)
    slow: bool = False

    def check(self, seen: Seen) -> list[str]:
        """What is missing for the case to count as handled (empty: handled)."""
        missing = [f"fragment {f!r}" for f in self.fragments if f not in seen.message]
        if self.code is not None and seen.code != self.code:
            missing.append(f"exit code {self.code} (got {seen.code})")
        return missing


CASES: list[Case] = []


def case(group: str, tried: str, *fragments: str, code: int | None = 2, slow: bool = False):
    assert group in GROUPS, group

    def register(run: Callable[[Path], Seen]) -> Callable[[Path], Seen]:
        CASES.append(Case(group, tried, fragments, run, code, slow))
        return run

    return register


# --- how cases act ------------------------------------------------------------------------------------------------

def write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def conll(sentences: int, entity: str = "Disease") -> str:
    """A small valid CoNLL file: `sentences` sentences with one entity each."""
    return "".join(f"Patient\tO\n{i}\tO\nhas\tO\nulcers\tB-{entity}\n.\tO\n\n" for i in range(sentences))


def toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else ("true" if value is True else "false"
                                                              if value is False else str(value))


def fedmedlora_run(tmp: Path, *raw: str, **keys: Any) -> Seen:
    """`fedmedlora run . -c ...` in this process (the same code as the command); results go under tmp."""
    from fedmedlora.launch.launcher import run

    pairs = {"run.results-dir": str(tmp / "runs"), **{k.replace("__", ".").replace("_", "-"): v
                                                      for k, v in keys.items()}}
    config = [" ".join(f"{k}={toml_value(v)}" for k, v in pairs.items()), *raw]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(str(ROOT), config, stream_to=out)
    return Seen(err.getvalue().strip(), code)


def settings_of(**keys: Any) -> Any:
    from fedmedlora.run_config import load_settings

    return load_settings({k.replace("__", ".").replace("_", "-"): v for k, v in keys.items()})


# --- run config ---------------------------------------------------------------------------------------------------

@case("Run config", "misspelt key (`lora.rank=4`)", "unknown key 'lora.rank'; did you mean 'lora.r'")
def _(tmp): return fedmedlora_run(tmp, "lora.rank=4")


@case("Run config", "wrong type (`lora.r=\"8\"`)", "key 'lora.r' = '8' (str): expected an integer")
def _(tmp): return fedmedlora_run(tmp, 'lora.r="8"')


@case("Run config", "value not allowed (`strategy.name=\"fedbogus\"`)",
      "key 'strategy.name' = 'fedbogus': allowed values")
def _(tmp): return fedmedlora_run(tmp, 'strategy.name="fedbogus"')


@case("Run config", "value out of range (`lora.dropout=1.5`)", "key 'lora.dropout' = 1.5: must be in [0, 1)")
def _(tmp): return fedmedlora_run(tmp, "lora.dropout=1.5")


@case("Run config", "more clients per round than sites", "key 'strategy.clients-per-round' = 9: more than the 3 sites")
def _(tmp): return fedmedlora_run(tmp, "strategy.clients-per-round=9")


@case("Run config", "no local work (steps and epochs both 0)", "set exactly one of them > 0")
def _(tmp): return fedmedlora_run(tmp, "train.local-steps=0")


@case("Run config", "validation + test fractions leave no training rows", "leave at least 10% of each site to train")
def _(tmp): return fedmedlora_run(tmp, "data.val-fraction=0.5 data.test-fraction=0.45")


@case("Run config", "learning-rate-min above learning-rate-max", "key 'train.learning-rate-min' = 0.1: larger than")
def _(tmp): return fedmedlora_run(tmp, "train.learning-rate-min=0.1")


@case("Run config", "no dataset named (`data.datasets=\"\"`)", "key 'data.datasets' is empty")
def _(tmp): return fedmedlora_run(tmp, 'data.datasets=""')


@case("Model", "8-bit quantization without a GPU", "model.quantization = 8 needs a CUDA GPU")
def _(tmp):
    from unittest import mock

    with mock.patch("torch.cuda.is_available", return_value=False):  # the same on a GPU machine
        return fedmedlora_run(tmp, "model.quantization=8")


@case("Model", "4-bit quantization of an encoder without a GPU (CPU 4-bit is for causal LMs)",
      "model.quantization = 4 on the CPU", "is supported for causal LMs only; this model is an encoder")
def _(tmp):
    from unittest import mock

    with mock.patch("torch.cuda.is_available", return_value=False):
        return fedmedlora_run(tmp, "model.quantization=4")


@case("Run config", "product aggregation with a strategy that combines factors",
      "key 'strategy.lora-aggregation' = 'product' with strategy.name = 'fedmedian'")
def _(tmp): return fedmedlora_run(tmp, 'strategy.name="fedmedian" strategy.lora-aggregation="product"')


@case("Run config", "Fed-MedLoRA+ without validation data", "fed-medlora-plus", "data.val-fraction")
def _(tmp): return fedmedlora_run(tmp, 'strategy.name="fed-medlora-plus" data.val-fraction=0.0')


@case("Run config", "preset file that does not exist", "--run-config conf/nope.toml: no such file")
def _(tmp): return fedmedlora_run(tmp, "conf/nope.toml")


@case("Run config", "preset file with a TOML syntax error", "bad.toml", "line 1")
def _(tmp): return fedmedlora_run(tmp, write(tmp, "bad.toml", "lora.r = = 4\n"))


@case("Run config", "a key given twice in one `-c` string", "key 'lora.r' is given twice (4, then 8); give it once")
def _(tmp): return fedmedlora_run(tmp, "lora.r=4 lora.r=8")


@case("Run config", "spaces around `=` (`lora.r = 4`; Flower silently ignores it)", "cannot read 'lora.r' as key=value")
def _(tmp): return fedmedlora_run(tmp, "lora.r = 4")


@case("Run config", "unquoted string value (`strategy.name=fedprox`)", 'quote strings, e.g. strategy.name="fedprox"')
def _(tmp): return fedmedlora_run(tmp, "strategy.name=fedprox")


@case("Run config", "pairs separated by commas", "separate pairs with spaces, not commas")
def _(tmp): return fedmedlora_run(tmp, "lora.r=4,lora.alpha=8")


@case("Run config", "several mistakes at once: all reported", "unknown key 'lora.rank'", "key 'lora.dropout' = 1.5")
def _(tmp): return fedmedlora_run(tmp, "lora.rank=4 lora.dropout=1.5")


# --- model ----------------------------------------------------------------------------------------------------

@case("Model", "LoRA target absent from the model",
      "key 'lora.target-modules' = 'q_proj'", "its linear layers are named ['classifier', 'dense', 'key'")
def _(tmp): return fedmedlora_run(tmp, lora__target_modules="q_proj")


@case("Model", "model folder that does not exist", "key 'model.name'", "model folder", "does not exist")
def _(tmp): return fedmedlora_run(tmp, model__name=str(tmp / "no-such-model"))


@case("Model", "model folder without a config (empty folder)", "key 'model.name'", "has no config.json")
def _(tmp):
    (tmp / "empty-model").mkdir()
    return fedmedlora_run(tmp, model__name=str(tmp / "empty-model"))


@case("Model", "model folder with a config but no weights", "has no weights (*.safetensors, pytorch_model*.bin)")
def _(tmp):
    write(tmp, "config-only/config.json", json.dumps({"model_type": "bert"}))
    return fedmedlora_run(tmp, model__name=str(tmp / "config-only"))


@case("Model", "unknown built-in model",
      "unknown built-in model 'builtin:minilm-l7'; built-in models: builtin:minilm-l6")
def _(tmp): return fedmedlora_run(tmp, model__name="builtin:minilm-l7")


@case("Model", "hub id that is not in the cache (offline)", "key 'model.name' = 'org-that-does-not-exist/model'",
      "cannot load the config")
def _(tmp): return fedmedlora_run(tmp, model__name="org-that-does-not-exist/model")


@case("Model", "instruction tuning on an encoder", "key 'data.task' = 'instruct' with a encoder model",
      "instruct on causal LMs")
def _(tmp): return fedmedlora_run(tmp, data__task="instruct", data__datasets="medquad")


# --- data files and names ------------------------------------------------------------------------------------------

@case("Data files and names", "CoNLL line without a tag", "bad.tsv:2: expected 'token<TAB>tag', got 'lonely'")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "bad.tsv", "Aspirin\tB-Chemical\nlonely\n"))


@case("Data files and names", "empty CoNLL file", "empty.tsv: no sentences (an empty file")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "empty.tsv", ""))


@case("Data files and names", "CoNLL tag that is not BIO", "bad.tsv:1: tag 'X-Bad' is not BIO")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "bad.tsv", "Aspirin\tX-Bad\n"))


@case("Data files and names", "BIOES tags", "bioes.tsv:1: tag 'S-Chemical' is from the BIOES/BILOU scheme",
      "S- and U- become B-")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "bioes.tsv", "Aspirin\tS-Chemical\n.\tO\n"))


@case("Data files and names", "IOB1 CoNLL file (I- opens entities): read as conlleval does",
      "train entities {'Chemical': 1, 'Disease': 3}", "read as conlleval does", code=None)
def _(tmp):
    from fedmedlora.data.rows import load_rows
    from fedmedlora.data.sites import Site, site_statistics

    path = write(tmp, "iob1.tsv", "Aspirin\tI-Chemical\ncauses\tO\ngastric\tI-Disease\nulcers\tI-Disease\nand\tO\n"
                                  "rash\tI-Disease\nfever\tB-Disease\n.\tO\n")
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("fedmedlora.data.conll").addHandler(handler)
    try:
        rows = load_rows("ner", [path])
    finally:
        logging.getLogger("fedmedlora.data.conll").removeHandler(handler)
    stats = site_statistics([Site(0, "site0", rows, [], [])], "ner")[0]
    return Seen(f"accepted; sites.json: train entities {stats['train-entities']}; partitioning label "
                f"{rows[0]['label']!r}; log: {log.getvalue().strip()}")


@case("Data files and names", "broken JSONL line (instruct)", "qa.jsonl:2: not valid JSON")
def _(tmp):
    path = write(tmp, "qa.jsonl", json.dumps({"question": "q?", "answer": "a."}) + "\n{not json\n")
    return fedmedlora_run(tmp, data__task="instruct", data__datasets=path, model__name="builtin:tiny-llama-micro",
                          lora__target_modules="q_proj")


@case("Data files and names", "JSONL without the expected fields (instruct)",
      "qa.jsonl:1: expected fields prompt/completion, instruction/input/output or question/answer; found ['text']")
def _(tmp):
    path = write(tmp, "qa.jsonl", json.dumps({"text": "x"}) + "\n")
    return fedmedlora_run(tmp, data__task="instruct", data__datasets=path, model__name="builtin:tiny-llama-micro",
                          lora__target_modules="q_proj")


@case("Data files and names", "JSONL in Latin-1 (not UTF-8)", "qa.jsonl:2: not UTF-8 text (byte 0xe9 at column 16)")
def _(tmp):
    path = write(tmp, "qa.jsonl", (json.dumps({"prompt": "P", "completion": "C"}) + "\n"
                                   + '{"prompt": "caf\u00e9", "completion": "C"}\n').encode("latin-1"))
    return fedmedlora_run(tmp, data__task="instruct", data__datasets=path, model__name="builtin:tiny-llama-micro",
                          lora__target_modules="q_proj")


@case("Data files and names", "CoNLL file saved as UTF-16 (some Windows editors)", "site.tsv: UTF-16 text; save the "
      "file as UTF-8")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "site.tsv", conll(3).encode("utf-16")))


@case("Data files and names", "binary file named as JSONL", "scan.jsonl: a binary file, not text")
def _(tmp):
    path = write(tmp, "scan.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return fedmedlora_run(tmp, data__task="instruct", data__datasets=path, model__name="builtin:tiny-llama-micro",
                          lora__target_modules="q_proj")


@case("Data files and names", "PubTator file in Latin-1", "cdr.pubtator:2: not UTF-8 text (byte 0xe9")
def _(tmp):
    path = write(tmp, "cdr.pubtator", "1|t|Aspirin and ulcers\n1|a|Caf\u00e9.\n".encode("latin-1"))
    return fedmedlora_run(tmp, data__task="re", data__datasets=path)


@case("Data files and names", "PubTator mention whose offsets do not match the text",
      "cdr.pubtator:3: mention text 'Aspirin' differs from the document's characters 1-8")
def _(tmp):
    path = write(tmp, "cdr.pubtator", "1|t|Aspirin and ulcers\n1|a|Ulcers.\n1\t1\t8\tAspirin\tChemical\tD1\n")
    return fedmedlora_run(tmp, data__task="re", data__datasets=path)


@case("Data files and names", "ChemProt-style JSONL line without argument markers",
      "chem.jsonl:1: 'text' must mark one argument as '<< ... >>' and one as '[[ ... ]]'")
def _(tmp):
    path = write(tmp, "chem.jsonl", json.dumps({"text": "aspirin inhibits COX", "label": "INHIBITOR"}) + "\n")
    return fedmedlora_run(tmp, data__task="re", data__datasets=path)


@case("Data files and names", "gzip-compressed file without .gz in its name", "site.tsv: a gzip-compressed file: name "
      "it site.tsv.gz")
def _(tmp):
    import gzip

    return fedmedlora_run(tmp, data__datasets=write(tmp, "site.tsv", gzip.compress(conll(3).encode())))


@case("Data files and names", "Hugging Face dataset id that cannot be loaded (offline, not cached)",
      "key 'data.datasets': cannot load Hugging Face dataset 'org-that-does-not-exist/data'")
def _(tmp): return fedmedlora_run(tmp, data__task="instruct", data__datasets="org-that-does-not-exist/data",
                                  model__name="builtin:tiny-llama-micro", lora__target_modules="q_proj")


@case("Data files and names", "data file that does not exist", "key 'data.datasets': file", "nope.tsv' does not exist")
def _(tmp): return fedmedlora_run(tmp, data__datasets=str(tmp / "nope.tsv"))


@case("Data files and names", "a folder named as a dataset", "is a folder; name a file")
def _(tmp): return fedmedlora_run(tmp, data__datasets=str(tmp))


@case("Data files and names", "misspelt bundled NER name", "'ncbi_disese' is neither a bundled NER dataset "
      "(ncbi_disease, bc5cdr)", "did you mean 'ncbi_disease'?")
def _(tmp): return fedmedlora_run(tmp, data__datasets="ncbi_disese")


@case("Data files and names", "misspelt bundled RE name", "(bc5cdr_cid, chemprot)", "did you mean 'chemprot'?")
def _(tmp): return fedmedlora_run(tmp, data__task="re", data__datasets="chemprot_v2")


@case("Data files and names", "misspelt bundled instruct name", "(medquad, medquad_flowertune, pubmedqa_pool)",
      "did you mean 'medquad'?")
def _(tmp): return fedmedlora_run(tmp, data__task="instruct", data__datasets="medqad",
                                  model__name="builtin:tiny-llama-micro", lora__target_modules="q_proj")


@case("Data files and names", "`data.task = \"instruct\"` with the NER datasets",
      "'ncbi_disease' is a bundled NER dataset, but data.task = 'instruct'", "Or set data.task = 'ner'")
def _(tmp): return fedmedlora_run(tmp, data__task="instruct", model__name="builtin:tiny-llama-micro",
                                  lora__target_modules="q_proj")


@case("Data files and names", "`data.task = \"re\"` with an NER dataset",
      "'bc5cdr' is a bundled NER dataset, but data.task = 're'")
def _(tmp): return fedmedlora_run(tmp, data__task="re", data__datasets="bc5cdr")


@case("Data files and names", "a CoNLL file given to the instruct task",
      "site.tsv:1: not valid JSON", "is data.task = 'ner' meant?")
def _(tmp): return fedmedlora_run(tmp, data__task="instruct", data__datasets=write(tmp, "site.tsv", conll(3)),
                                  model__name="builtin:tiny-llama-micro", lora__target_modules="q_proj")


@case("Data files and names", "the same dataset named twice", "key 'data.datasets': 'ncbi_disease' is named twice")
def _(tmp): return fedmedlora_run(tmp, data__datasets="ncbi_disease,ncbi_disease")


@case("Data files and names", "every bad entry at once", "a.tsv:2", "b.tsv: no sentences", "'ncbi_disese'")
def _(tmp):
    bad = ",".join([write(tmp, "a.tsv", "x\tO\ny\n"), write(tmp, "b.tsv", "\n"), "ncbi_disese"])
    return fedmedlora_run(tmp, data__datasets=bad)


# --- sites ------------------------------------------------------------------------------------------------------

@case("Sites", "natural partitioning with a different number of sites",
      "key 'data.num-sites' = 3: natural partitioning of", "gives 1 sites (site)")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "site.tsv", conll(30)), data__partitioning="natural")


@case("Sites", "more sites than the data can fill", "key 'data.num-sites' = 8: site",
      "of the 10 rows (data.partitioning = 'iid'), too few",
      "lower data.num-sites")
def _(tmp): return fedmedlora_run(tmp, data__datasets=write(tmp, "site.tsv", conll(10)), data__num_sites=8)


@case("Sites", "Dirichlet partitioning that cannot give every site 10 rows",
      "keys 'data.dirichlet-alpha' = 0.05, 'data.num-sites' = 3: Dirichlet partitioning of 30 rows found no split")
def _(tmp):
    mixed = conll(15, "Disease") + conll(15, "Chemical")
    return fedmedlora_run(tmp, data__datasets=write(tmp, "site.tsv", mixed), data__partitioning="dirichlet",
                          data__partition_by="label", data__dirichlet_alpha=0.05)


@case("Sites", "Dirichlet over a column the rows do not have", "key 'data.partition-by' = 'hospital': no such column")
def _(tmp): return fedmedlora_run(tmp, data__partitioning="dirichlet", data__partition_by="hospital",
                                  data__datasets=write(tmp, "site.tsv", conll(30)))


# --- results and run folders --------------------------------------------------------------------------------------

@case("Results and run folders", "results folder that cannot be written",
      "key 'run.results-dir' =", "cannot write there:", "a-file is a file, not a folder")
def _(tmp):
    write(tmp, "a-file", "x")
    return fedmedlora_run(tmp, run__results_dir=str(tmp / "a-file" / "runs"))


@case("Results and run folders", "`run.name` with `../` (would write outside run.results-dir)",
      "key 'run.name' = '../escape': must be a single folder name")
def _(tmp): return fedmedlora_run(tmp, run__name="../escape")


@case("Results and run folders", "`run.name` an absolute path",
      "key 'run.name' = '/tmp/x': must be a single folder name")
def _(tmp): return fedmedlora_run(tmp, run__name="/tmp/x")


@case("Results and run folders", "run folder that holds a finished run",
      "key 'run.name' = 'done':", "holds a completed run; choose another run.name")
def _(tmp):
    write(tmp, "runs/done/metrics.jsonl", "{}\n")
    write(tmp, "runs/done/summary.json", json.dumps({"status": "completed"}))
    return fedmedlora_run(tmp, run__name="done")


@case("Results and run folders", "run folder left by a run that died before round 0 ended",
      "key 'run.name' = 'died':", "holds the start of a run that stopped before round 0 ended (config.json, "
      "sites.json, summary.json; no metrics.jsonl)")
def _(tmp):
    for name in ("config.json", "sites.json", "summary.json"):
        write(tmp, f"runs/died/{name}", "{}")
    before = (tmp / "runs/died/config.json").read_text()
    seen = fedmedlora_run(tmp, run__name="died")
    assert (tmp / "runs/died/config.json").read_text() == before  # nothing overwritten
    return seen


# --- client replies (the server's screening, as a round sees them) --------------------------------------------------

A, B = "m.layers.0.query.lora_A.weight", "m.layers.0.query.lora_B.weight"
GOOD = {A: np.array([[1.0, 0.0]], np.float32), B: np.array([[1.0], [2.0]], np.float32)}


def round_with(tmp: Path, bad_reply: Callable[[Any, Callable], Any], **overrides: Any) -> Seen:
    """One FedAvg round over two sites: site 0 replies well, site 1 with `bad_reply(out_message, reply)`. What the
    user sees: the console line and the round's record in metrics.jsonl."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
    from fedmedlora.recorder import RunRecorder
    from fedmedlora.settings import parse_run_config
    from fedmedlora.strategies import build_strategy
    from fedmedlora.wire import to_array_record

    settings = parse_run_config({"data.num-sites": 2, **overrides})
    recorder = RunRecorder(tmp)
    strategy = build_strategy(settings, recorder, GOOD, None)
    set_task_identity(1, 0)
    out = sorted(strategy.configure_train(1, to_array_record(GOOD, "float32"), ConfigRecord(), NodeIdsGrid(2)),
                 key=lambda m: m.metadata.dst_node_id)

    def reply(msg: Any, state: dict, dtype: str = "float16", **metrics: Any) -> Any:
        set_task_identity(1, msg.metadata.dst_node_id)
        record = state if not isinstance(state, dict) else to_array_record(state, dtype)
        content = RecordDict({"arrays": record, "metrics": MetricRecord(
            {"num-examples": 4, "num-tokens": 40, "site": msg.metadata.dst_node_id - 1, **metrics})})
        return Message(content, reply_to=msg)

    replies = [reply(out[0], GOOD), bad_reply(out[1], reply)]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        set_task_identity(1, 0)
        strategy.aggregate_train(1, replies)
    record = recorder.end_round(1)
    line = " ".join(ln for ln in console.getvalue().splitlines() if ln.startswith("[fedmedlora]"))
    return Seen(f"{line} | metrics.jsonl: usable {record['usable']}, exclusions {record['exclusions']}, "
                f"failures {record['failures']}")


def nan_state() -> dict:
    return {A: GOOD[A], B: np.array([[np.nan], [0.0]], np.float32)}


@case("Client replies", "NaN in a tensor", "node 2 left out of the aggregate", "non-finite values (1 NaN, 0 Inf)",
      "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, nan_state()))


@case("Client replies", "Inf in a tensor", "non-finite values (0 NaN, 1 Inf)", "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, {A: GOOD[A], B: np.array([[np.inf], [0]])}))


@case("Client replies", "tensor of the wrong shape", "has shape (2, 2), expected (2, 1)", "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, {A: GOOD[A], B: np.zeros((2, 2))}))


@case("Client replies", "a tensor missing", "missing 1 key(s)", "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, {A: GOOD[A]}))


@case("Client replies", "an extra tensor", "1 unexpected key(s): 'm.extra'", "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, {**GOOD, "m.extra": np.zeros(1)}))


@case("Client replies", "integer tensors instead of float16/float32", "dtype int32, expected float16 or float32",
      "exclusions 1", code=None)
def _(tmp):
    from flwr.app import Array, ArrayRecord

    ints = ArrayRecord({k: Array(np.ones(v.shape, np.int32)) for k, v in GOOD.items()})
    return round_with(tmp, lambda msg, reply: reply(msg, ints))


@case("Client replies", "weight metric missing or not positive", "metric 'num-examples' missing or not a positive "
      "number: -3", "exclusions 1", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, GOOD, **{"num-examples": -3}))


@case("Client replies", "the ClientApp raised an exception", "client error: RuntimeError: out of memory",
      "failures 1", code=None)
def _(tmp):
    from flwr.app import Error, Message

    from fedmedlora.launch.grid import set_task_identity

    def error(msg: Any, reply: Callable) -> Any:
        set_task_identity(1, msg.metadata.dst_node_id)
        return Message(Error(code=0, reason="RuntimeError: out of memory"), reply_to=msg)

    return round_with(tmp, error)


@case("Client replies", "fewer usable replies than strategy.min-replies", "1 usable replies (strategy.min-replies = 2)"
      ": the global adapter stays as it was", code=None)
def _(tmp): return round_with(tmp, lambda msg, reply: reply(msg, nan_state()), **{"strategy.min-replies": 2})


# --- end to end -----------------------------------------------------------------------------------------------------

@case("End to end", "`fedmedlora run` (a subprocess) with a bad LoRA target and a malformed data file: one "
      "message, exit 2, before Flower starts", "the run cannot start (2 problems)", "lora.target-modules",
      "bad.tsv:2", slow=True)
def _(tmp):
    env = {**os.environ, "FEDMEDLORA_CACHE": os.environ.get("FEDMEDLORA_CACHE", str(tmp / "cache"))}
    data = write(tmp, "bad.tsv", "Aspirin\tB-Chemical\nlonely\n")
    done = subprocess.run([sys.executable, "-m", "fedmedlora.cli", "run", str(ROOT), "-c",
                           f'lora.target-modules="q_proj" data.datasets="{data}" run.results-dir="{tmp / "runs"}"'],
                          capture_output=True, text=True, env=env, timeout=300)
    started = "flwr run" in done.stdout  # the launcher prints this line once Flower is started
    return Seen(done.stderr.strip() + (" [Flower was started]" if started else ""), done.returncode)


@case("End to end", "plain `flwr run` path: the ServerApp (in-process grid) with a malformed data file stops before "
      "any training: each site reads its own data when asked to describe it, and says it cannot (the file's text stays "
      "at the site)", "invalid federation", "SuperNode 1 cannot serve its site",
      "DataFormatError: a data file could not be read at this site", "ClientApp calls: 3", code=None, slow=True)
def _(tmp):
    from flwr.app import Context, RecordDict

    from fedmedlora.client_app import app as client_app
    from fedmedlora.launch.grid import InProcessGrid, set_task_identity
    from fedmedlora.server_app import run_server

    config = {"data.datasets": write(tmp, "bad.tsv", "Aspirin\tB-Chemical\nlonely\n"),
              "run.results-dir": str(tmp / "runs")}
    grid = InProcessGrid(client_app, config, 3)
    set_task_identity(1, 0)
    try:
        run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
        message = "the run started"
    except Exception as err:  # Flower shows the ServerApp's exception: its message is what the user reads
        message = f"{type(err).__name__}: {err}"
    return Seen(f"{message} | ClientApp calls: {len(grid.calls)}")


@case("End to end", "a ClientApp that raises while training (in-process federation, 1 round): excluded with its "
      "reason, counted, the run completes and keeps every round (the reason is the exception's type: its text stays at "
      "the site)", "client error: RuntimeError: the ClientApp failed at this site", "rounds recorded [0, 1]",
      "status 'completed'", code=None, slow=True)
def _(tmp):
    import fedmedlora.client_app as client_app
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    from helpers import TINY_NER

    original = client_app.train_locally

    def flaky(settings, task, resident, dataset, **kwargs):
        if kwargs["seed"] == client_app.round_seed(settings, 1, 0):
            raise RuntimeError("site 0 lost power")
        return original(settings, task, resident, dataset, **kwargs)

    client_app.train_locally = flaky
    try:
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            run_in_process({**TINY_NER, "num-server-rounds": 1, "run.results-dir": str(tmp), "run.name": "r"})
    finally:
        client_app.train_locally = original
    records = read_metrics(tmp / "r")
    summary = json.loads((tmp / "r" / "summary.json").read_text())
    line = next(ln for ln in console.getvalue().splitlines() if "left out" in ln)
    return Seen(f"{line} | rounds recorded {[r['round'] for r in records]}, round 1 failures "
                f"{records[1]['failures']}, status {summary['status']!r}")


# --- the table ------------------------------------------------------------------------------------------------------

def run_case(item: Case) -> Seen:
    """Run one case in a fresh temporary folder; its paths read `<tmp>` in the message."""
    with tempfile.TemporaryDirectory(prefix="fedmedlora-reliability-") as folder:
        tmp = Path(folder).resolve()
        start = time.perf_counter()
        seen = item.run(tmp)
        seen.seconds = time.perf_counter() - start
        seen.message = seen.message.replace(str(tmp), TMP)
        return seen


def table(results: list[tuple[Case, Seen]]) -> str:
    handled = sum(not c.check(s) for c, s in results)
    lines = [
        "# Reliability: bad inputs and what the user sees",
        "",
        "Generated by `python tests/reliability_cases.py --write results/reliability.md` from the cases that "
        "`tests/test_reliability.py` runs (issue 14). A case is handled when the message names what is wrong (key, "
        "file and line, what to write instead) and, for `fedmedlora run`, it exits 2 before Flower starts; nothing "
        "a run wrote is lost in any case (no run folder is reused; a failing client leaves the run's records whole).",
        "",
        f"**{handled} handled / {len(results)} tried.**",
        "",
    ]
    for group in GROUPS:
        rows = [(c, s) for c, s in results if c.group == group]
        lines += [f"## {group}", ""]
        if not rows:
            lines += ["(cases to come with issue 14 items 3-6)" if group == "Poisoning and leaks" else "(none)", ""]
            continue
        lines += ["| case | what the user sees | exit | s | handled |", "|---|---|---:|---:|---|"]
        for c, s in rows:
            text = " ".join(s.message.split()).replace("|", "\\|")
            text = text if len(text) <= 600 else text[:600] + " [...]"
            code = "" if s.code is None else str(s.code)
            lines.append(f"| {c.tried} | `{text}` | {code} | {s.seconds:.1f} | "
                         f"{'yes' if not c.check(s) else 'no: ' + '; '.join(c.check(s))} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="write the markdown table there (default: print it)")
    args = parser.parse_args(argv)
    results = []
    for item in CASES:
        results.append((item, run_case(item)))
        print(f"[{'ok' if not item.check(results[-1][1]) else 'NOT HANDLED'}] {item.group}: {item.tried}",
              file=sys.stderr, flush=True)
    text = table(results)
    if args.write:
        Path(args.write).write_text(text + "\n")
    else:
        print(text)
    return 0 if all(not c.check(s) for c, s in results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py, as pytest finds it
    sys.exit(main(sys.argv[1:]))
