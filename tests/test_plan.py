"""The plan: warmups first, ABBA blocks, every pair once per round, deterministic per seed."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.plan import MetricShape, Step, plan_steps
from bench.scenario import Case, expand_cases, parse_scenario


def _startup(
    backends: list[str],
    cases: list[Case],
    samples: int,
    warmups: int,
    seed: int,
    repeats: int = 1,
) -> list[Step]:
    shape = MetricShape("startup", warmups, samples)
    return plan_steps([shape], backends, cases, repeats, seed)


def _cases(n_memory: int) -> list[Case]:
    values = ", ".join(str(64 * (i + 1)) for i in range(n_memory))
    text = "name: t\nbackends: [process, docker]\n" + (
        f"matrix: {{memory_mib: [{values}]}}\n" if n_memory else ""
    )
    return expand_cases(parse_scenario(text))


def test_warmups_come_first_and_are_marked() -> None:
    steps = _startup(["process", "docker"], _cases(0), samples=4, warmups=2, seed=1)
    assert [s.warmup for s in steps] == [True] * 4 + [False] * 8
    assert [s.index for s in steps] == list(range(12))
    assert [s.round for s in steps] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_rounds_come_in_mirrored_pairs() -> None:
    steps = _startup(["process", "docker"], _cases(2), samples=6, warmups=0, seed=7)
    rounds: dict[int, list[tuple[str, str]]] = {}
    for step in steps:
        rounds.setdefault(step.round, []).append((step.backend, step.case.name))
    for first in range(0, 6, 2):
        assert rounds[first + 1] == rounds[first][::-1]


def test_same_seed_same_plan_other_seed_other_order() -> None:
    def order(seed: int) -> list[tuple[str, str]]:
        return [
            (s.backend, s.case.name)
            for s in _startup(["process", "docker"], _cases(3), 10, 1, seed)
        ]

    assert order(3) == order(3)
    assert any(order(3) != order(seed) for seed in range(4, 10))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**32))
def test_every_pair_once_per_round(samples: int, warmups: int, n_memory: int, seed: int) -> None:
    cases = _cases(n_memory)
    steps = _startup(["process", "docker"], cases, samples, warmups, seed)
    assert len(steps) == 2 * len(cases) * (samples + warmups)
    per_round = Counter((s.round, s.backend, s.case.name) for s in steps)
    assert set(per_round.values()) == {1}
    measured = Counter((s.backend, s.case.name) for s in steps if not s.warmup)
    assert set(measured.values()) == {samples}


def test_blocks_repeat_the_whole_plan_with_their_own_order() -> None:
    cases = _cases(2)
    memory = MetricShape("memory", 0, 2)
    startup = MetricShape("startup", 1, 4)
    steps = plan_steps([startup, memory], ["process", "docker"], cases, 3, seed=5)
    per_block = 2 * len(cases) * (1 + 4 + 2)
    assert len(steps) == 3 * per_block
    assert [s.block for s in steps] == [b for b in range(3) for _ in range(per_block)]
    for block in range(3):
        mine = [s for s in steps if s.block == block]
        # inside a block: startup warmups, then startup rounds, then memory
        assert [s.metric for s in mine] == ["startup"] * (2 * len(cases) * 5) + ["memory"] * (
            2 * len(cases) * 2
        )
        assert all(s.warmup for s in mine[: 2 * len(cases)])
    orders = {
        block: [(s.backend, s.case.name) for s in steps if s.block == block and not s.warmup]
        for block in range(3)
    }
    assert len({tuple(order) for order in orders.values()}) > 1, "blocks draw their own order"
