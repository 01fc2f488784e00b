"""Test-only helpers: a run context over real backends whose samples go to a list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.backends.base import Backend
from bench.cgroups.layout import detect as detect_layout
from bench.metrics.base import RunContext
from bench.metrics.startup import measure_startup
from bench.plan import MetricShape, plan_steps
from bench.samples import Sample
from bench.scenario import Scenario, expand_cases, parse_scenario

if TYPE_CHECKING:
    import pandas as pd


def make_ctx(scenario: Scenario, backends: list[Backend], run_id: str) -> RunContext:
    """A run context over ``backends`` recording into ``ctx.recorded`` (no store on disk)."""
    recorded: list[Sample] = []
    ctx = RunContext(
        run_id=run_id,
        scenario=scenario,
        backends={b.name: b for b in backends},
        layout=detect_layout(),
        sink=recorded.append,
    )
    ctx.recorded = recorded  # type: ignore[attr-defined]
    return ctx


def startup_series(
    backend: Backend, scenario_text: str, run_id: str, seed: int = 1
) -> tuple[list[Sample], RunContext]:
    """Plan and measure every startup step of a one-backend scenario, through a context."""
    scenario = parse_scenario(scenario_text)
    ctx = make_ctx(scenario, [backend], run_id)
    shape = MetricShape("startup", scenario.warmups, scenario.samples)
    steps = plan_steps([shape], [backend.name], expand_cases(scenario), scenario.repeats, seed)
    samples = [measure_startup(ctx, backend, step) for step in steps]
    return samples, ctx


def run_frame(directory: object) -> pd.DataFrame:
    """A run's measured records (host noise records left out) as the one reader gives them."""
    from bench.analysis.dataset import load_dataset

    frame = load_dataset([directory]).samples  # type: ignore[list-item]
    return frame[frame["metric"] != "noise"].reset_index(drop=True)


def assert_quota_held(
    value_cores: float, quota_cores: float, evidence: dict[str, object], note: str | None
) -> None:
    """A CPU quota held, on the kernel's evidence: a ceiling, and throttling while it acted.

    The quota promises a ceiling, not a share: usage stays at or under Q plus the default
    5% tolerance and the kernel throttled the group. On a busy host the payload may get
    less than Q (other work took the cores); then the verdict must say so (contention),
    never fail and never pass silently.
    """
    assert 0 < value_cores <= quota_cores * 1.05, f"used {value_cores} of {quota_cores} cores"
    throttled = evidence["nr_throttled_delta"]
    assert isinstance(throttled, int) and throttled > 0, evidence
    if value_cores < quota_cores * 0.95:
        assert note is not None and "contention" in note, note
