"""The tidy sample record: one measured number per line of samples.jsonl.

Split the way conbench splits a result: what case it was (metric, backend, case,
params), the value (value, unit, stages), and how it was taken (t_ns, labels). Host and
software context lives once per run in run.json, not on every line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLE_SCHEMA_VERSION = 1


@dataclass
class Sample:
    """One measured value (or one failed attempt, ``ok=False`` with ``error``)."""

    run_id: str
    seq: int
    metric: str
    backend: str
    case: str
    value: float | None
    unit: str
    ok: bool = True
    error: str | None = None
    warmup: bool = False
    round: int = 0
    instance: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    t_ns: dict[str, int] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SAMPLE_SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise as one compact JSON line (no trailing newline)."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        """Rebuild a sample from its JSON dict (current schema only)."""
        return cls(**data)
