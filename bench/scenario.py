"""Scenario files: YAML validated by pydantic models, expanded into readable cases.

A scenario names the backends to compare, the metrics, the sample counts, the instance
spec, and matrix parameters that expand into one case per combination. Loading is strict
(``extra="forbid"``): a bad file raises one ScenarioError naming the file, the field path
and the reason, before anything is started.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import ScenarioError
from bench.files import read_text_bounded

SCENARIO_SCHEMA_VERSION = 1
# A scenario is a few lines: anything past this is not one (and is not read into memory).
MAX_SCENARIO_BYTES = 1024 * 1024
# Names become parts of run ids, file names and report titles: letters, digits and a few
# separators only, so no name can be a path, a shell word or a terminal escape.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$"


class _ScenarioYamlError(yaml.YAMLError):
    """What scenario files do not allow (aliases, anchors, explicit tags, a key twice)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _ScenarioLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, anchors, explicit tags or duplicate keys.

    Aliases are how a "billion laughs" file expands to gigabytes; tags turn text into
    other types (``!!binary``). A scenario needs neither, so both are refused at parse
    time, before anything is expanded. A key given twice in one mapping (``name:`` twice)
    is a mistake PyYAML silently resolves by keeping the last; it is refused with both
    lines.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _ScenarioYamlError(
                "YAML aliases (*name) are not allowed in scenario files", event.start_mark
            )
        if getattr(event, "anchor", None) is not None:
            raise _ScenarioYamlError(
                "YAML anchors (&name) are not allowed in scenario files", event.start_mark
            )
        tag = getattr(event, "tag", None)
        implicit = getattr(event, "implicit", True)
        explicit = not any(implicit) if isinstance(implicit, tuple) else not implicit
        if tag is not None and explicit and tag != "!":
            raise _ScenarioYamlError(
                f"YAML tags ({tag}) are not allowed in scenario files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a non-scalar key fails validation later, with its path
                key = self.construct_object(key_node)
                if key in first_line:
                    raise _ScenarioYamlError(
                        f"duplicate key {key!r} (first on line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


MetricName = Literal["startup", "memory", "density", "limits"]
LimitKind = Literal["memory", "cpu", "pids"]


def known_backend_names() -> list[str]:
    """Backend names from the registry (imported late: backends import this module)."""
    from bench.backends import backend_names

    return backend_names()


class FieldPathError(ValueError):
    """A validation error that knows the exact field path it belongs to (e.g. a matrix entry)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Payload(_Strict):
    """What the probe does inside the instance (see bench/artifacts/probe.c)."""

    mode: Literal["ready", "idle", "alloc", "burn", "fork"] = Field(
        "ready",
        description="ready: print READY and exit; idle: READY then wait; "
        "alloc/burn/fork: READY then allocate memory, burn CPU, or fork children.",
    )
    alloc_mib: Annotated[int, Field(ge=1, le=1 << 20)] | None = Field(
        None, description="MiB to allocate and touch (mode alloc)."
    )
    threads: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Busy threads (mode burn)."
    )
    seconds: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        None, description="How long to burn (mode burn) or hold (alloc, fork)."
    )
    forks: Annotated[int, Field(ge=1, le=100000)] | None = Field(
        None, description="Children to fork (mode fork)."
    )
    spin_ms: Annotated[float, Field(gt=0, le=60000)] | None = Field(
        None,
        description="Busy-spin this long before anything else (a known, injected delay "
        "before READY; bench run --inject-spin-ms sets it without changing the scenario).",
    )

    @model_validator(mode="after")
    def _arguments_match_mode(self) -> Payload:
        needed = {"alloc": ("alloc_mib",), "burn": ("threads", "seconds"), "fork": ("forks",)}
        for name in needed.get(self.mode, ()):
            if getattr(self, name) is None:
                raise ValueError(f"mode {self.mode!r} needs {name}")
        return self

    def argv(self) -> list[str]:
        """Return the probe's arguments for this payload (no shell is ever involved)."""
        spin = ["spin", _fmt(self.spin_ms)] if self.spin_ms is not None else []
        return spin + self._mode_argv()

    def _mode_argv(self) -> list[str]:
        if self.mode == "alloc":
            args = ["alloc", str(self.alloc_mib)]
            return args + ([_fmt(self.seconds)] if self.seconds is not None else [])
        if self.mode == "burn":
            return ["burn", str(self.threads), _fmt(self.seconds)]
        if self.mode == "fork":
            args = ["fork", str(self.forks)]
            return args + ([_fmt(self.seconds)] if self.seconds is not None else [])
        return [self.mode]


def _fmt(value: float | None) -> str:
    return f"{value:g}" if value is not None else "0"


class DockerOptions(_Strict):
    """Options only the docker backend reads."""

    network: Literal["none", "bridge"] = Field(
        "none", description="Container network mode; none unless a scenario needs a network."
    )


class InstanceSpec(_Strict):
    """What one instance looks like; matrix parameters override these fields."""

    memory_mib: Annotated[int, Field(ge=4, le=1 << 20)] | None = Field(
        None, description="Memory limit of the instance in MiB (none: unlimited)."
    )
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = Field(
        None, description="CPU quota of the instance in cores (none: unlimited)."
    )
    network: Literal["none", "bridge"] = Field(
        "none", description="Network mode for backends that have one (docker)."
    )
    pids_limit: Annotated[int, Field(ge=1, le=1 << 22)] | None = Field(
        None, description="Maximum processes in the instance's cgroup (none: unlimited)."
    )
    guest_memory_mib: Annotated[int, Field(ge=32, le=1 << 20)] = Field(
        128, description="Guest RAM in MiB (libvirt): the VM's size, not a cgroup limit."
    )
    vcpus: Annotated[int, Field(ge=1, le=256)] = Field(1, description="Guest vCPUs (libvirt).")
    accel: Literal["auto", "kvm", "tcg"] = Field(
        "auto",
        description="libvirt accelerator: auto boots a KVM guest once as evidence and falls "
        "back to TCG (software emulation) when it does not reach userspace.",
    )
    payload: Payload = Field(default_factory=Payload)


MATRIX_KEYS: tuple[str, ...] = ("memory_mib", "cpus", "network", "guest_memory_mib", "vcpus")


class MemoryOptions(_Strict):
    """How the memory-overhead metric is taken (three views, all recorded: README, Method)."""

    instances: Annotated[int, Field(ge=1, le=10000)] = Field(
        4, description="Idle instances per backend and case, measured together."
    )
    rounds: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="How many times each backend and case is measured (ABBA order)."
    )
    settle_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        5.0, description="Wait after every instance is READY before reading memory."
    )
    drop_caches: bool = Field(
        True, description="Drop the host page cache before the MemAvailable baseline (root)."
    )
    step_settle_s: Annotated[float, Field(ge=0, le=600)] = Field(
        1.0,
        description="Pause after each instance is READY before reading MemAvailable: the "
        "points of the MemAvailable-against-N slope.",
    )
    ksm: Literal["off", "on", "both"] = Field(
        "off",
        description="Kernel same-page merging during the measurement: off (switched off), "
        "on (switched on before the instances start; read once it settled), or both (read "
        "with it off, then switch it on, let it settle and read the same instances again). "
        "The host's setting is given back afterwards.",
    )
    ksm_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        300, description="How long KSM may take to settle before the reading is taken anyway."
    )
    ksm_stable_s: Annotated[float, Field(gt=0, le=600)] = Field(
        10,
        description="KSM has settled when pages_sharing moved less than 1% over this long.",
    )
    thp: Literal["host", "always", "madvise", "never"] = Field(
        "host",
        description="Transparent huge pages during the measurement: the host's setting, or "
        "this one (given back afterwards).",
    )


class DensityOptions(_Strict):
    """The density ramp: add instances at a fixed cadence until a stop rule fires."""

    max_count: Annotated[int, Field(ge=1, le=100000)] = Field(
        50, description="Stop after this many instances."
    )
    interval_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        0.5,
        description="Cadence: one new instance every interval, whether or not earlier "
        "ones are READY yet.",
    )
    mem_floor_mib: Annotated[int, Field(ge=0)] = Field(
        2048, description="Stop when host MemAvailable falls below this (the host must never OOM)."
    )
    slo_p99_s: Annotated[float, Field(gt=0)] = Field(
        60.0, description="Stop when the p99 startup-to-READY of the ramp so far exceeds this."
    )
    slo_min_instances: Annotated[int, Field(ge=1)] = Field(
        5, description="Instances needed before the p99 SLO rule may fire."
    )
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="Stop when failed / started exceeds this (after slo_min_instances)."
    )
    ready_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        120.0, description="Per-instance READY timeout during the ramp."
    )


class LimitOptions(_Strict):
    """Limit-enforcement checks: set a limit, push the payload past it, measure what held."""

    kinds: Annotated[list[LimitKind], Field(min_length=1)] = Field(
        default_factory=lambda: list[LimitKind](["memory", "cpu", "pids"])
    )
    memory_limit_mib: Annotated[int, Field(ge=8)] = Field(
        64, description="Memory limit L (for a VM: headroom added to qemu's usage at READY)."
    )
    memory_alloc_mib: Annotated[int, Field(ge=1)] = Field(
        128, description="What the payload allocates and touches: more than L."
    )
    memory_control_mib: Annotated[int, Field(ge=1)] = Field(
        16, description="The control run's allocation: less than L, must not be killed."
    )
    memory_tolerance_mib: Annotated[float, Field(ge=0)] = Field(
        4, description="Peak usage may exceed L by this much and still count as held."
    )
    cpu_quotas: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.5, 0.25], description="CPU quotas Q in cores."
    )
    cpu_threads: Annotated[int, Field(ge=1)] = Field(2, description="Busy threads (> Q).")
    cpu_seconds: Annotated[float, Field(gt=0)] = Field(4, description="How long to burn.")
    cpu_tolerance: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.05,
        description="Measured cores may exceed Q by this fraction and still count as held "
        "(the quota is a ceiling; less than Q on a busy host is noted as contention).",
    )
    pids_limit: Annotated[int, Field(ge=2)] = Field(20, description="pids limit P.")
    pids_forks: Annotated[int, Field(ge=1)] = Field(40, description="Forks attempted (> P).")
    sample_interval_s: Annotated[float, Field(gt=0, le=10)] = Field(
        0.05, description="How often cgroup files are sampled while the instance lives."
    )

    @model_validator(mode="after")
    def _past_the_limit(self) -> LimitOptions:
        if self.memory_alloc_mib <= self.memory_limit_mib:
            raise FieldPathError("limits.memory_alloc_mib", "must exceed memory_limit_mib")
        if self.memory_control_mib >= self.memory_limit_mib:
            raise FieldPathError("limits.memory_control_mib", "must be below memory_limit_mib")
        if self.pids_forks <= self.pids_limit:
            raise FieldPathError("limits.pids_forks", "must exceed pids_limit")
        return self


class Scenario(_Strict):
    """One scenario file: what to compare, how often, and on what instances."""

    schema_version: Literal[1] = Field(1, description="Scenario file format version.")
    name: Annotated[str, Field(min_length=1, max_length=120, pattern=NAME_PATTERN)] = Field(
        description="Letters, digits, space and . _ + - (it becomes part of run ids and file "
        "names)."
    )
    description: Annotated[str, Field(max_length=20000)] = ""
    backends: Annotated[list[str], Field(min_length=1)] = Field(
        description="Backends to compare, by registered name (see bench doctor)."
    )
    metrics: Annotated[list[MetricName], Field(min_length=1)] = Field(
        default_factory=lambda: list[MetricName](["startup"])
    )
    samples: Annotated[int, Field(ge=1, le=100000)] = Field(
        10, description="Measured samples per backend and case, in each repeat."
    )
    repeats: Annotated[int, Field(ge=1, le=1000)] = Field(
        1,
        description="Blocks: the whole plan (warmups included) runs this many times, "
        "separated by repeat_gap_s. The block, not the sample, is the unit of "
        "run-to-run noise that comparisons test on.",
    )
    repeat_gap_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        5.0, description="Pause between blocks, so host drift between them is sampled."
    )
    warmups: Annotated[int, Field(ge=0, le=1000)] = Field(
        1, description="Warmup samples per backend and case, recorded and marked, not mixed in."
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60, description="Per-instance timeout for each lifecycle stage."
    )
    settle_s: Annotated[float, Field(ge=0, le=600)] = Field(
        0.25,
        description="Pause after each instance is removed, so one instance's teardown "
        "(e.g. containerd-shim exiting) does not land in the next one's timing.",
    )
    start: Literal["warm", "cold"] = Field(
        "warm", description="cold drops the host page cache before every sample (root only)."
    )
    seed: int | None = Field(None, description="Seed of the randomized block order.")
    instance: InstanceSpec = Field(default_factory=InstanceSpec)
    memory: MemoryOptions = Field(default_factory=MemoryOptions)
    density: DensityOptions = Field(default_factory=DensityOptions)
    limits: LimitOptions = Field(default_factory=LimitOptions)
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict,
        description=f"Instance fields to vary, one case per combination: {', '.join(MATRIX_KEYS)}.",
    )

    @field_validator("backends", "metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value

    @field_validator("backends")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        known = known_backend_names()
        for index, name in enumerate(value):
            if name not in known:
                raise FieldPathError(
                    f"backends[{index}]",
                    f"unknown backend {name!r}; valid backends: {', '.join(known)}",
                )
        return value

    @field_validator("matrix")
    @classmethod
    def _matrix_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key not in MATRIX_KEYS:
                raise ValueError(
                    f"unknown matrix parameter {key!r}; valid: {', '.join(MATRIX_KEYS)}"
                )
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"matrix parameter {key!r} repeats a value")
        return value

    @model_validator(mode="after")
    def _matrix_values_valid(self) -> Scenario:
        base = self.instance.model_dump()
        for key, values in self.matrix.items():
            for index, value in enumerate(values):
                try:
                    InstanceSpec.model_validate({**base, key: value})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"]
                    raise FieldPathError(f"matrix.{key}[{index}]", reason) from None
        return self


class Case(BaseModel):
    """One expanded point of the matrix: a readable name and the instance spec to run."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any]
    spec: InstanceSpec


def expand_cases(scenario: Scenario) -> list[Case]:
    """Expand the matrix into cases named like ``startup(memory_mib=64,network=none)``."""
    metric = "+".join(scenario.metrics)
    keys = list(scenario.matrix)
    combos = itertools.product(*(scenario.matrix[k] for k in keys)) if keys else [()]
    base = scenario.instance.model_dump()
    cases = []
    for combo in combos:
        params = dict(zip(keys, combo, strict=True))
        label = ",".join(f"{k}={_case_value(v)}" for k, v in params.items())
        name = f"{metric}({label})" if label else metric
        cases.append(
            Case(name=name, params=params, spec=InstanceSpec.model_validate({**base, **params}))
        )
    return cases


def _case_value(value: Any) -> str:
    return "none" if value is None else str(value)


# Fields that say how often the experiment is repeated, not what it is: runs that differ
# only in these are the same experiment and compare (their blocks are pooled by block).
NOT_HASHED_FIELDS = frozenset({"repeats", "repeat_gap_s"})


def scenario_sha256(scenario: Scenario) -> str:
    """Hash the canonical JSON of a validated scenario: equal hashes mean comparable runs.

    The repetition fields are left out: three runs of one block and one run of three
    blocks are the same experiment. So are fields left at their defaults: a field a later
    bench adds (with a default that keeps the old behaviour) does not change the hash of
    a scenario that does not set it.
    """
    data = scenario.model_dump(mode="json", exclude=set(NOT_HASHED_FIELDS), exclude_defaults=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Render pydantic errors as ``FILE: field PATH: REASON`` lines, one per problem."""
    lines = []
    for error in exc.errors():
        loc = tuple(
            p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        # pydantic puts union/constraint tags in the path; keep only real field names
        loc = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str)
                and ("[" in p or p in {"int", "float", "constrained-int", "constrained-float"})
            )
        )
        message = error["msg"].removeprefix("Value error, ")
        original = error.get("ctx", {}).get("error")
        if isinstance(original, FieldPathError):
            lines.append(f"{source}: field {original.path}: {original}")
            continue
        if error["type"] == "extra_forbidden":
            message = "unknown field (not allowed here)"
        if error["type"] == "missing":
            message = "required field is missing"
        if error["type"] == "string_pattern_mismatch" and loc == ("name",):
            message = (
                "only letters, digits, space and . _ + - are allowed, starting with a letter "
                "or digit (the name becomes part of run ids and file names)"
            )
        if "input" in error and error["type"] not in {"missing", "extra_forbidden"}:
            shown = json.dumps(error["input"], default=str)
            if len(shown) <= 60:
                message += f" (got {shown})"
        lines.append(f"{source}: field {_format_location(loc)}: {message}")
    return "\n".join(lines)


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Parse and validate scenario YAML text; raise ScenarioError naming source, field, reason."""
    if len(text.encode()) > MAX_SCENARIO_BYTES:
        raise ScenarioError(
            f"{source}: not a scenario: {len(text.encode())} bytes, more than "
            f"{MAX_SCENARIO_BYTES} bytes"
        )
    try:
        data = yaml.load(text, Loader=_ScenarioLoader)  # a safe loader (see the class)
    except RecursionError:
        raise ScenarioError(f"{source}: YAML nesting too deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _ScenarioYamlError):
            raise ScenarioError(f"{source}{where}: {problem}") from None
        raise ScenarioError(f"{source}{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ScenarioError(f"{source}: field (top level): expected a mapping, got {kind}")
    version = data.get("schema_version", SCENARIO_SCHEMA_VERSION)
    if isinstance(version, int) and version > SCENARIO_SCHEMA_VERSION:
        raise ScenarioError(
            f"{source}: field schema_version: {version} is newer than this bench reads "
            f"({SCENARIO_SCHEMA_VERSION}); upgrade bench"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(source, exc)) from None


def load_scenario(path: str | Path) -> tuple[Scenario, str]:
    """Read a scenario file; return the validated model and the file's text.

    Only a regular file of at most ``MAX_SCENARIO_BYTES`` is read (``bench.files``): a
    device, a FIFO or a directory is refused without reading or waiting.
    """
    text = read_text_bounded(path, MAX_SCENARIO_BYTES, ScenarioError, "scenario")
    return parse_scenario(text, str(path)), text


def json_schema() -> dict[str, Any]:
    """Return the JSON schema of scenario files, for editor completion."""
    schema = Scenario.model_json_schema()
    schema["properties"]["backends"]["items"] = {"enum": known_backend_names(), "type": "string"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bench scenario"
    return schema
