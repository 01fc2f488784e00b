"""Blocks until the figures are precise enough: ``bench run --target-mde``.

After each block the runner asks whether every measured quantity's minimum detectable
effect is at or under the target; if not, it runs another block, until the time budget
or the block cap. It stops on precision only: the MDE depends on how much the blocks
vary, never on what they show, so the stopping rule cannot bias a comparison (stopping
when a difference looks significant would).

The MDE here is the one of two runs of this design counting the noise between blocks
only: ``(t(0.975, K-1) + t(0.80, K-1)) x sqrt(2 s^2 / K)``, s the SD of the log block
medians, with this run's K - 1 degrees of freedom (``bench compare`` of two such runs
would have about twice as many: this errs on the side of more blocks). The noise
between runs comes on top, and only more runs average it down (``bench calibrate`` says
how many). This module is on the run path, so it uses no scipy: the t quantiles are a
table.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bench.samples import Sample

# Student's t quantiles by degrees of freedom (1..30)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_T80 = (
    1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879,
    0.876, 0.873, 0.870, 0.868, 0.866, 0.865, 0.863, 0.862, 0.861, 0.860,
    0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854,
)  # fmt: skip
_Z975, _Z80 = 1.960, 0.842
# the metrics whose samples are replicated measurements (density and limits are one
# value per block by design; memory's views are judged in MiB, not by a ratio)
PRECISION_METRICS = frozenset({"startup"})


def t_quantiles(df: int) -> tuple[float, float]:
    """(t(0.975, df), t(0.80, df)) for df >= 1.

    From the table up to 30 degrees of freedom; beyond, the normal quantile with two
    Cornish-Fisher terms (within 0.001 of the exact one).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {df}")
    if df <= len(_T975):
        return _T975[df - 1], _T80[df - 1]

    def expanded(z: float) -> float:
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)

    return expanded(_Z975), expanded(_Z80)


def block_mde(block_medians: list[float]) -> float | None:
    """The MDE (a fraction) of two runs of this many blocks, from these block medians."""
    count = len(block_medians)
    if count < 2 or min(block_medians) <= 0:
        return None
    logs = [math.log(m) for m in block_medians]
    t975, t80 = t_quantiles(count - 1)
    return math.expm1((t975 + t80) * math.sqrt(2 * statistics.variance(logs) / count))


@dataclass
class PrecisionTracker:
    """The block medians of every replicated quantity, as the samples come in."""

    target_mde: float
    values: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def add(self, sample: Sample) -> None:
        """Take a measured sample's value (warmups, failures and other metrics aside)."""
        if sample.metric not in PRECISION_METRICS or sample.warmup or not sample.ok:
            return
        if sample.value is None or sample.value <= 0:
            return
        view = str(sample.labels.get("view", ""))
        key = " ".join(p for p in (sample.metric, sample.backend, sample.case, view) if p)
        self.values.setdefault(key, {}).setdefault(sample.block, []).append(sample.value)

    def mdes(self) -> dict[str, float | None]:
        """Each quantity's MDE so far (None with fewer than two blocks)."""
        return {
            key: block_mde([statistics.median(v) for _, v in sorted(blocks.items())])
            for key, blocks in sorted(self.values.items())
        }

    def short(self) -> list[str]:
        """The quantities whose MDE is not yet at or under the target."""
        return [k for k, mde in self.mdes().items() if mde is None or mde > self.target_mde]

    def summary(self, blocks: int, reason: str) -> dict[str, object]:
        """What run.json records: the target, each quantity's MDE, what fell short, why."""
        return {
            "target_mde": self.target_mde,
            "blocks": blocks,
            "stopped": reason,
            "mde": {k: None if v is None else round(v, 5) for k, v in self.mdes().items()},
            "short": self.short(),
            "level": "between the blocks of this run; the noise between runs comes on top",
        }
