"""Scoring checkpoints after training: medical QA benchmarks the way FlowerTune's medical leaderboard scores them,
and NER/RE F1.

    cli.py              `fedmedlora-eval` / `eval/eval.py`
    eval_model.py       loading the base model (optionally quantized) and a PEFT adapter for scoring
    qa_outputs.py       the files a QA run leaves (accuracy file, generations JSONL, summary JSON)
    ie_eval.py          NER/RE checkpoints of either family on bundled or user data
    machine_info.py     the machine a score was measured on

The QA benchmarks, FlowerTune's prompts and answer rule, and the scorer are one layer down, shared with training
and the per-round evaluation: ../data/qa_benchmarks.py, ../data/qa_prompts.py, ../scoring/qa_answers.py, ../qa/.
"""
