"""The plan: warmups first, then backends interleaved in randomized ABBA blocks.

Each round visits every (backend, case) pair once. Rounds come in pairs: the first of a
pair uses a fresh random order, the second the reverse of it (A B | B A), so slow host
drift within a pair hits every backend equally. Warmup rounds are planned the same way
and marked, never mixed into the measured samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.scenario import Case


@dataclass(frozen=True)
class Step:
    """One instance to measure: which backend and case, in which round, warmup or not."""

    seq: int
    round: int
    backend: str
    case: Case
    warmup: bool


def plan_steps(
    backends: list[str], cases: list[Case], samples: int, warmups: int, seed: int
) -> list[Step]:
    """Return every step of a run in execution order (deterministic for a given seed)."""
    rng = random.Random(seed)
    pairs = [(backend, case) for case in cases for backend in backends]
    steps: list[Step] = []
    seq = 0
    for phase_warmup, rounds in ((True, warmups), (False, samples)):
        order: list[tuple[str, Case]] = []
        for index in range(rounds):
            if index % 2 == 0:
                order = pairs[:]
                rng.shuffle(order)
            else:
                order = order[::-1]
            round_number = index if phase_warmup else warmups + index
            for backend, case in order:
                steps.append(Step(seq, round_number, backend, case, phase_warmup))
                seq += 1
    return steps
