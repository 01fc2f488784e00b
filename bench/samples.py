"""The tidy sample record: one measured number per line of samples.jsonl.

Split the way conbench splits a result: what case it was (metric, backend, case,
params, block), the value (value, unit, stages), and how it was taken (t_ns, labels).
Host and software context lives once per run in run.json, not on every line; what a
backend knows about itself (its mechanism class, runtime, machine type) is merged into
every sample's labels.

Schema history (``upgrade_sample_record`` migrates older lines as they are read):

- 1: the first format.
- 2: ``block`` (which repeat of the plan the sample belongs to: the unit of
  run-to-run noise), ``step`` (the plan step that took it, so a resumed run knows what
  is done) and the backend's metadata in ``labels`` (at least ``mechanism``: native,
  container, sandbox or vm). Version-1 lines are block 0, step -1, and their mechanism
  is inferred from the three backends that existed then.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLE_SCHEMA_VERSION = 2

# The only backends version-1 files can name, and their mechanism classes.
_V1_MECHANISMS = {"process": "native", "docker": "container", "libvirt": "vm"}


@dataclass(kw_only=True)
class Sample:
    """One measured value (or one failed attempt, ``ok=False`` with ``error``).

    ``run_id`` and ``seq`` are stamped by the run context when it is recorded, and
    ``block`` too unless the sample already names one (derived records keep their
    source's block).
    """

    run_id: str = ""
    seq: int = -1
    metric: str
    backend: str
    case: str
    value: float | None
    unit: str
    ok: bool = True
    error: str | None = None
    warmup: bool = False
    round: int = 0
    block: int = -1  # -1 until the run context stamps the current block
    step: int = -1  # the plan step that took it (-1: derived after the plan, e.g. overheads)
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
        """Rebuild a sample from its JSON dict (older schemas are migrated first)."""
        return cls(**upgrade_sample_record(dict(data)))


def upgrade_sample_record(record: dict[str, Any]) -> dict[str, Any]:
    """Bring one decoded sample line to the current schema, in place; return it.

    A line newer than this bench reads is returned unchanged: the reader refuses it.
    """
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or version >= SAMPLE_SCHEMA_VERSION:
        return record
    if version < 2:
        record.setdefault("block", 0)
        record.setdefault("step", -1)
        labels = record.get("labels")
        if not isinstance(labels, dict):
            labels = {}
            record["labels"] = labels
        mechanism = _V1_MECHANISMS.get(str(record.get("backend")))
        if mechanism is not None:
            labels.setdefault("mechanism", mechanism)
    record["schema_version"] = SAMPLE_SCHEMA_VERSION
    return record
