"""The plan: warmups first, ABBA blocks, every pair once per round, deterministic per seed."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.plan import plan_steps
from bench.scenario import expand_cases, parse_scenario


def _cases(n_memory: int):
    values = ", ".join(str(64 * (i + 1)) for i in range(n_memory))
    text = "name: t\nbackends: [process, docker]\n" + (
        f"matrix: {{memory_mib: [{values}]}}\n" if n_memory else ""
    )
    return expand_cases(parse_scenario(text))


def test_warmups_come_first_and_are_marked() -> None:
    steps = plan_steps(["process", "docker"], _cases(0), samples=4, warmups=2, seed=1)
    assert [s.warmup for s in steps] == [True] * 4 + [False] * 8
    assert [s.seq for s in steps] == list(range(12))
    assert [s.round for s in steps] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_rounds_come_in_mirrored_pairs() -> None:
    steps = plan_steps(["process", "docker"], _cases(2), samples=6, warmups=0, seed=7)
    rounds: dict[int, list[tuple[str, str]]] = {}
    for step in steps:
        rounds.setdefault(step.round, []).append((step.backend, step.case.name))
    for first in range(0, 6, 2):
        assert rounds[first + 1] == rounds[first][::-1]


def test_same_seed_same_plan_other_seed_other_order() -> None:
    def order(seed: int) -> list[tuple[str, str]]:
        return [
            (s.backend, s.case.name)
            for s in plan_steps(["process", "docker"], _cases(3), 10, 1, seed)
        ]

    assert order(3) == order(3)
    assert any(order(3) != order(seed) for seed in range(4, 10))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**32))
def test_every_pair_once_per_round(samples: int, warmups: int, n_memory: int, seed: int) -> None:
    cases = _cases(n_memory)
    steps = plan_steps(["process", "docker"], cases, samples, warmups, seed)
    assert len(steps) == 2 * len(cases) * (samples + warmups)
    per_round = Counter((s.round, s.backend, s.case.name) for s in steps)
    assert set(per_round.values()) == {1}
    measured = Counter((s.backend, s.case.name) for s in steps if not s.warmup)
    assert set(measured.values()) == {samples}
