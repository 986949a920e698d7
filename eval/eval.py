"""FlowerTune-style entry point, run from this folder as FlowerTune's harness is:

    cd eval && python eval.py --base-model-name-path=builtin:tiny-llama --quantization=0 --datasets=medqa --limit=50

The logic lives in fedmedlora/evaluation/cli.py (also installed as the `fedmedlora-eval` command).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fedmedlora.evaluation.cli import main
except ImportError:  # a plain checkout, not pip-installed: use the package next to this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fedmedlora.evaluation.cli import main

if __name__ == "__main__":
    # Results land in eval/results/<run-name>/ wherever this is started from.
    raise SystemExit(main(results_root=Path(__file__).resolve().parent / "results"))
