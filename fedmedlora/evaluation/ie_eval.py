"""`eval.py --task ner|re`: score a checkpoint of either model family on entity or relation extraction.

    python eval.py --task ner --base-model-name-path builtin:minilm-l6 --peft-path results/runs/<run>/peft_3 \\
        --datasets ncbi_disease,bc5cdr --quantization 0

The task's own predict/score code runs (the same code that scores federated rounds), so numbers here equal the
server-side evaluation of a run on the same rows. Bundled corpora are scored on their official `--split` (test by
default); users' files (CoNLL for NER; the RE formats of the training side) are scored whole. The label set comes from
the checkpoint (`fedmedlora.json`, written next to every `peft_<round>/`), or from the data for a bare base model.
Outputs in the output folder: `<task>_summary.json` (per dataset and pooled: strict/lenient headline, typed micro and
macro, per type, unparseable answers), `<task>_table.md` and `<task>_predictions.jsonl` (written as scored).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import EvalInputError


def _checkpoint_info(peft_path: str | None) -> dict[str, Any]:
    if not peft_path:
        return {}
    info = Path(peft_path) / "fedmedlora.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def _rows(task: str, datasets: list[str]) -> list[dict[str, Any]]:
    from ..data.files import DataFormatError
    from ..data.rows import load_rows

    try:
        return load_rows(task, datasets)
    except (DataFormatError, ValueError) as err:
        raise EvalInputError(str(err)) from None


def _split(rows: list[dict[str, Any]], datasets: list[str], split: str) -> list[dict[str, Any]]:
    chosen = [r for r in rows if r.get("split", "all") in (split, "all")]
    if not chosen:
        raise EvalInputError(f"--datasets {','.join(datasets)}: no rows in split {split!r}")
    return chosen


def _load(args: argparse.Namespace, family: str, labels: list[str], head: str) -> Any:
    """A resident-like (model, tokenizer) pair: the same object the tasks use during federated runs."""
    from ..model.resident import Resident
    from .eval_model import ModelRequest, check_model_request, load_model_for_eval, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    request = ModelRequest(args.base_model_name_path, args.peft_path, args.quantization, device,
                           resolve_dtype(args.dtype, args.quantization, device))
    check_model_request(request, family=family)
    model, tokenizer = load_model_for_eval(request, family=family, labels=labels, head=head)
    return Resident(model=model, tokenizer=tokenizer, family=family, labels=tuple(labels), key=())


def run_ie(args: argparse.Namespace) -> int:
    from ..job import resolve_family
    from ..scoring.spans import score_spans
    from ..settings import ConfigError, parse_run_config
    from ..tasks import build_task, task_class

    task_name = args.task
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    info = _checkpoint_info(args.peft_path)
    if info.get("task") and info["task"] != task_name:
        raise EvalInputError(f"--task {task_name}: the checkpoint {args.peft_path} was trained for task {info['task']!r}")
    try:
        settings = parse_run_config({"data.task": task_name, "data.datasets": ",".join(datasets),
                                     "model.name": args.base_model_name_path,
                                     "data.max-length": int(info.get("max-length", args.max_length)),
                                     "evaluate.batch-size": args.batch_size})
        family = resolve_family(settings)
    except (ConfigError, ValueError) as err:
        raise EvalInputError(str(err)) from None
    all_rows = _rows(task_name, datasets)
    rows = _split(all_rows, datasets, args.split)
    if args.limit:
        rows = rows[: args.limit]
    # The checkpoint's classes (an encoder head's rows, in its order); else what the data holds: for RE the whole
    # dataset files (every relation type), for NER the rows scored.
    labels = info.get("labels") if family == "encoder" and info.get("labels") else None
    try:
        if labels:
            task = build_task(settings, family, vocabulary=task_class(settings, family).vocabulary_from_labels(labels))
        else:
            task = build_task(settings, family, rows=rows if task_name == "ner" else all_rows)
    except ConfigError as err:
        raise EvalInputError(str(err)) from None
    resident = _load(args, family, list(task.labels), task.head)
    output_dir = Path(args.output_dir) if args.output_dir else args.results_root / args.run_name
    output_dir.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    start = time.time()
    outcomes, summary = {}, {"task": task_name, "family": family, "base-model": args.base_model_name_path,
                             "peft-path": args.peft_path, "split": args.split, "datasets": {}}
    predictions = output_dir / f"{task_name}_predictions.jsonl"
    tmp = predictions.with_name(predictions.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        for source, source_rows in by_source.items():
            dataset = task.tokenize(source_rows, resident.tokenizer)
            outcome = task.predict(resident, source_rows, dataset, args.batch_size)
            outcomes[source] = outcome
            summary["datasets"][source] = {"examples": len(source_rows), "metrics": task.score(outcome)}
            generations = getattr(outcome, "generations", None) or [None] * len(source_rows)
            for i, row in enumerate(source_rows):
                record = {"uid": row["uid"], "source": source}
                if hasattr(outcome, "gold"):
                    record["gold"] = [_plain(item) for item in outcome.gold[i]]
                    record["pred"] = [_plain(item) for item in outcome.pred[i]]
                if generations[i] is not None:
                    record["generation"] = generations[i]
                fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
    os.replace(tmp, predictions)
    pooled = task.merge(list(outcomes.values()))
    summary["pooled"] = task.score(pooled)
    summary["seconds"] = time.time() - start
    table = ""
    if hasattr(pooled, "gold") and task_name == "ner":
        scores = score_spans(pooled.gold, pooled.pred)
        summary["pooled-detail"] = scores.to_dict()
        table = scores.table()
    _write_json(output_dir / f"{task_name}_summary.json", summary)
    headline = summary["pooled"]
    (output_dir / f"{task_name}_table.md").write_text(
        f"# {task_name.upper()} on {', '.join(by_source)} ({args.split})\n\n"
        f"strict F1 {headline.get('strict-f1', float('nan')):.4f}, lenient F1 "
        f"{headline.get('lenient-f1', float('nan')):.4f}\n\n{table}\n")
    print(f"{task_name}: strict-f1 {headline.get('strict-f1', float('nan')):.4f} "
          f"lenient-f1 {headline.get('lenient-f1', float('nan')):.4f} on {len(rows)} examples -> {output_dir}")
    return 0


def _plain(item: Any) -> Any:
    """A span or relation as JSON: dataclasses become dicts (recursively), anything else stays."""
    import dataclasses

    return dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
