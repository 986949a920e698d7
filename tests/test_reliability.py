"""Issue 14's reliability table as tests: every case in reliability_cases.py must be handled (its message names what
is wrong and, for `fedmedlora run`, it exits 2 before Flower starts). `python tests/reliability_cases.py --write
results/reliability.md` writes the table from the same cases."""

from __future__ import annotations

import pytest

from reliability_cases import CASES, GROUPS, run_case

# A config error found before Flower starts must come back fast; the budget is loose (2 shared cores, cold imports).
SECONDS = 60.0


def _param(item):
    marks = [pytest.mark.slow] if item.slow else []
    return pytest.param(item, id=f"{item.group}: {item.tried}", marks=marks)


@pytest.mark.parametrize("item", [_param(c) for c in CASES])
def test_case_is_handled(item):
    seen = run_case(item)
    assert not item.check(seen), f"{item.check(seen)}\nthe user sees:\n{seen.message}"
    if item.code == 2:
        assert seen.seconds < SECONDS, f"took {seen.seconds:.0f} s"


def test_every_group_of_the_issue_is_covered():
    covered = {c.group for c in CASES}
    assert covered == set(GROUPS) - {"Poisoning and leaks"}  # items 3-6 add theirs
    assert len(CASES) >= 56  # the issue tried 56 cases
