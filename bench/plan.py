"""The plan: every step of a run, in order, before anything starts.

A run is ``repeats`` blocks. Inside a block, each metric of the scenario gets its steps:
warmups first (marked, never mixed in), then rounds in which every (backend, case) pair
is visited once. Rounds come in pairs: the first of a pair uses a fresh random order, the
second the reverse of it (A B | B A), so slow host drift within a pair hits every
backend equally. Each block draws its own orders, so blocks are independent repeats of
the whole experiment: the unit comparisons test on.

What a step *is* belongs to its metric: one startup instance, one group of idle
instances for memory, one set of limit checks, one density ramp.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.scenario import Case


@dataclass(frozen=True)
class Step:
    """One unit of work: a metric on one backend and case, in a block and round."""

    index: int
    metric: str
    block: int
    round: int
    backend: str
    case: Case
    warmup: bool


@dataclass(frozen=True)
class MetricShape:
    """How many warmup and measured rounds a metric takes per block."""

    metric: str
    warmups: int
    rounds: int


def plan_steps(
    shapes: list[MetricShape],
    backends: list[str],
    cases: list[Case],
    repeats: int,
    seed: int,
) -> list[Step]:
    """Return every step of a run in execution order (deterministic for a given seed)."""
    rng = random.Random(seed)
    pairs = [(backend, case) for case in cases for backend in backends]
    steps: list[Step] = []
    for block in range(repeats):
        for shape in shapes:
            for phase_warmup, rounds in ((True, shape.warmups), (False, shape.rounds)):
                order: list[tuple[str, Case]] = []
                for index in range(rounds):
                    if index % 2 == 0:
                        order = pairs[:]
                        rng.shuffle(order)
                    else:
                        order = order[::-1]
                    round_number = index if phase_warmup else shape.warmups + index
                    for backend, case in order:
                        steps.append(
                            Step(
                                index=len(steps),
                                metric=shape.metric,
                                block=block,
                                round=round_number,
                                backend=backend,
                                case=case,
                                warmup=phase_warmup,
                            )
                        )
    return steps
