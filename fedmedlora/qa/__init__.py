"""Scoring a causal LM on multiple-choice medical QA benchmarks the way FlowerTune's medical leaderboard does.

    inference.py   the generation budget rule, option log-likelihoods, and both modes from one forward pass
    scoring.py     one dataset end to end: prompts -> predictions -> counts, records handed on as they finish
    suite.py       the fixed benchmark samples a run scores after every round (`evaluate.qa-benchmarks`)

The benchmarks themselves (items, samples) and FlowerTune's prompts are data (../data/qa_benchmarks.py,
../data/qa_prompts.py), so training rows can be written in exactly the prompt eval scores; the answer rule is pure
scoring (../scoring/qa_answers.py). `fedmedlora-eval` (../evaluation/) and the ServerApp's per-round evaluation
both score through this package.
"""
