"""cgroup v2 inside a guest: the kernel parameter that asks for it, and parsers of what comes back.

Hosts like the development machines are cgroup v1, so bench's v2 path is exercised
against a real v2 kernel inside a guest: the probe, as the guest's init, reads
``bench_cgroup2=FILE=VALUE,...`` from the kernel command line, mounts cgroup2 at
/sys/fs/cgroup, enables +memory +pids +cpu, creates /sys/fs/cgroup/bench, writes the
limits there and runs the payload in that group (see bench/artifacts/probe.c). Over the
serial console it reports back:

- ``BENCH_CG_CONTROLLERS cpuset cpu io memory ...``: the root's cgroup.controllers;
- ``BENCH_CG_SAMPLE <guest_monotonic_ms> memory.current=N pids.current=N usage_usec=N
  nr_throttled=N``: every 100 ms while the payload runs (at most 300 lines);
- ``BENCH_CG_BEGIN <file>`` ... ``BENCH_CG_END <file>``: each of memory.events,
  memory.peak, memory.max, memory.current, pids.events, pids.max, pids.peak, cpu.stat and
  cpu.max after the payload ended, verbatim; ``BENCH_CG_ABSENT <file> <errno name>`` for
  a file the kernel does not have;
- ``BENCH_CG_ERROR <what>: <reason>`` when the group could not be set up (then no payload
  runs and BENCH_EXIT is 4).

Everything here is pure text processing; the file contents are parsed with the same
readers (bench.cgroups.readers) that read a v2 host's files, so those readers meet real
v2 output. Typical use::

    cmdline = boot_cmdline(f"{artifacts.cmdline_base} {guest_cgroup_param(limits)}", mode)
    ...boot, read the console...
    dump = parse_cgroup_dump(console)
    samples = parse_cgroup_samples(console)

The guest clock appears only in samples, and only as guest time over guest time
(CPU used by the group per guest second): never compare it with host timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bench.cgroups.readers import parse_flat_keyed, parse_int_file

CGROUP_PARAM = "bench_cgroup2"
GUEST_CGROUP_DIR = "/sys/fs/cgroup/bench"
GUEST_CONTROLLERS = ("memory", "pids", "cpu")  # what init enables in the root's subtree_control
SAMPLE_INTERVAL_MS = 100
MAX_SAMPLES = 300
DUMPED_FILES = (
    "memory.events",
    "memory.peak",
    "memory.max",
    "memory.current",
    "pids.events",
    "pids.max",
    "pids.peak",
    "cpu.stat",
    "cpu.max",
)
TIME_KEY = "guest_monotonic_ms"
# A kernel command line is at most 2048 bytes on x86 (COMMAND_LINE_SIZE); keep ours small.
MAX_PARAM_CHARS = 512

SAMPLE_MARKER = "BENCH_CG_SAMPLE"
BEGIN_MARKER = "BENCH_CG_BEGIN"
END_MARKER = "BENCH_CG_END"
ABSENT_MARKER = "BENCH_CG_ABSENT"
ERROR_MARKER = "BENCH_CG_ERROR"
CONTROLLERS_MARKER = "BENCH_CG_CONTROLLERS"
CAPPED_MARKER = "BENCH_CG_SAMPLES_CAPPED"

_FILE_NAME = re.compile(r"^(?:memory|pids|cpu)\.[a-z][a-z0-9_.]*$")
# ':' stands for the space in two-field values (cpu.max "QUOTA PERIOD" -> "QUOTA:PERIOD").
_VALUE = re.compile(r"^[A-Za-z0-9_.+:-]+$")
_SAMPLE_LINE = re.compile(r"^BENCH_CG_SAMPLE (\d+)((?: [a-z_.]+=-?\d+)*)$")
# A kernel printk line on the same console (CONFIG_PRINTK_TIME): "[    1.670445] ...".
_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")


def cpu_max_value(quota_usec: int | None, period_usec: int = 100_000) -> str:
    """The cpu.max value for ``guest_cgroup_param``: ``"25000:100000"``, or ``"max:100000"``.

    ``quota_usec`` None means no quota. 0.25 cores is quota 25000 over period 100000.
    """
    if period_usec <= 0 or (quota_usec is not None and quota_usec <= 0):
        raise ValueError(f"cpu.max quota {quota_usec} / period {period_usec} must be > 0")
    return f"{'max' if quota_usec is None else quota_usec}:{period_usec}"


def guest_cgroup_param(limits: Mapping[str, str]) -> str:
    """The kernel parameter that makes the guest's init run the payload in a v2 cgroup.

    ``limits`` maps a cgroup file of the memory, pids or cpu controller to the value to
    write there, in order, e.g. ``{"memory.max": "33554432", "pids.max": "10",
    "cpu.max": "25000:100000"}`` -> ``bench_cgroup2=memory.max=33554432,pids.max=10,
    cpu.max=25000:100000``. A value is written as given, with each ':' turned into a
    space (``cpu_max_value`` builds cpu.max's). An empty mapping still runs the payload in
    its own group, unlimited. Raises ValueError for a file name or value that cannot
    travel on a kernel command line (spaces, commas, '=', quotes) or names a controller
    the guest does not enable.
    """
    items: list[str] = []
    for name, value in limits.items():
        if not _FILE_NAME.match(name):
            raise ValueError(
                f"cgroup file {name!r}: must be a file of the {'/'.join(GUEST_CONTROLLERS)} "
                "controllers (e.g. memory.max), lower case, no '/'"
            )
        if not isinstance(value, str) or not _VALUE.match(value):
            raise ValueError(
                f"value {value!r} for {name}: must be a non-empty string of letters, digits "
                "and _.+:- (no spaces, commas, '=' or quotes; write cpu.max as QUOTA:PERIOD)"
            )
        items.append(f"{name}={value}")
    param = f"{CGROUP_PARAM}={','.join(items)}"
    if len(param) > MAX_PARAM_CHARS:
        raise ValueError(f"{CGROUP_PARAM} parameter is {len(param)} chars (max {MAX_PARAM_CHARS})")
    return param


def _console_lines(console_text: str) -> list[str]:
    return [line.rstrip("\r") for line in console_text.split("\n")]


def parse_cgroup_dump(console_text: str) -> dict[str, str]:
    """Map each dumped cgroup file to its text (LF line ends, trailing newline kept).

    Only complete BEGIN/END blocks count: a console cut short mid-dump (a guest killed
    from outside) gives the files completed before the cut. Kernel printk lines that land
    inside a block are dropped. Files the guest reported absent are not in the result
    (see ``parse_cgroup_absent``). Raises ValueError when a file is dumped twice: the text
    must be the console of one boot.
    """
    dump: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    for line in _console_lines(console_text):
        word, _, rest = line.partition(" ")
        if word == BEGIN_MARKER:
            current, body = rest.strip(), []
        elif word == END_MARKER and current is not None:
            if rest.strip() == current:
                if current in dump:
                    raise ValueError(f"{current} dumped twice: more than one boot's console?")
                dump[current] = "".join(f"{b}\n" for b in body)
            current = None
        elif current is not None and not _KERNEL_LINE.match(line):
            body.append(line)
    return dump


def parse_cgroup_absent(console_text: str) -> dict[str, str]:
    """Files the guest kernel does not have: file -> errno name (``ENOENT``)."""
    absent: dict[str, str] = {}
    for line in _console_lines(console_text):
        parts = line.split()
        if len(parts) == 3 and parts[0] == ABSENT_MARKER:
            absent[parts[1]] = parts[2]
    return absent


def parse_cgroup_errors(console_text: str) -> list[str]:
    """The guest's ``BENCH_CG_ERROR`` reasons (empty when the group was set up)."""
    prefix = f"{ERROR_MARKER} "
    return [line[len(prefix) :] for line in _console_lines(console_text) if line.startswith(prefix)]


def parse_cgroup_controllers(console_text: str) -> list[str] | None:
    """The controllers the guest's cgroup2 root offers, or None when it never reported them."""
    for line in _console_lines(console_text):
        word, _, rest = line.partition(" ")
        if word == CONTROLLERS_MARKER:
            return rest.split()
    return None


def samples_capped(console_text: str) -> bool:
    """True when the guest stopped sampling at MAX_SAMPLES (the series ends early)."""
    return any(line.split(" ", 1)[0] == CAPPED_MARKER for line in _console_lines(console_text))


def parse_cgroup_samples(console_text: str) -> list[dict[str, int]]:
    """The ``BENCH_CG_SAMPLE`` series, in console order.

    Each sample maps ``guest_monotonic_ms`` (the guest's CLOCK_MONOTONIC in ms) and
    whichever of ``memory.current`` (bytes), ``pids.current``, ``usage_usec`` and
    ``nr_throttled`` (cpu.stat) the guest could read to integers. A line garbled by a
    kernel message printed into it is skipped, never half-parsed.
    """
    samples: list[dict[str, int]] = []
    for line in _console_lines(console_text):
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        sample = {TIME_KEY: int(match.group(1))}
        for pair in match.group(2).split():
            key, _, value = pair.partition("=")
            sample[key] = int(value)
        samples.append(sample)
    return samples


# --- verdict helpers over a dump (file -> text) and a sample series ----------------------


def memory_events(dump: Mapping[str, str]) -> dict[str, int]:
    """memory.events counters (low, high, max, oom, oom_kill, oom_group_kill); {} if absent."""
    return parse_flat_keyed(dump.get("memory.events", ""))


def memory_oom_kills(dump: Mapping[str, str]) -> int | None:
    """memory.events ``oom_kill``: processes the group's own limit killed; None if not dumped."""
    return memory_events(dump).get("oom_kill")


def memory_oom_killed(dump: Mapping[str, str]) -> bool:
    """True when the group's memory limit killed at least one process (oom_kill >= 1)."""
    return (memory_oom_kills(dump) or 0) >= 1


def _int_file(dump: Mapping[str, str], name: str) -> int | None:
    text = dump.get(name)
    return parse_int_file(text) if text is not None else None


def memory_peak_bytes(dump: Mapping[str, str]) -> int | None:
    """memory.peak in bytes (the group's high-water mark); None when the kernel has none."""
    return _int_file(dump, "memory.peak")


def memory_max_bytes(dump: Mapping[str, str]) -> int | None:
    """memory.max in bytes; None when unlimited (``max``) or not dumped."""
    return _int_file(dump, "memory.max")


def memory_current_bytes(dump: Mapping[str, str]) -> int | None:
    """memory.current in bytes after the payload ended; None when not dumped."""
    return _int_file(dump, "memory.current")


def pids_max_events(dump: Mapping[str, str]) -> int | None:
    """pids.events ``max``: forks refused at pids.max; None when not dumped."""
    return parse_flat_keyed(dump.get("pids.events", "")).get("max")


def pids_limit(dump: Mapping[str, str]) -> int | None:
    """pids.max; None when unlimited (``max``) or not dumped."""
    return _int_file(dump, "pids.max")


def pids_peak(dump: Mapping[str, str]) -> int | None:
    """pids.peak (most tasks the group held at once); None when the kernel has none."""
    return _int_file(dump, "pids.peak")


def cpu_stat(dump: Mapping[str, str]) -> dict[str, int]:
    """cpu.stat counters (usage_usec, nr_periods, nr_throttled, throttled_usec...); {} if absent."""
    return parse_flat_keyed(dump.get("cpu.stat", ""))


def cpu_max_cores(dump: Mapping[str, str]) -> float | None:
    """The cpu.max quota in cores (``25000 100000`` -> 0.25); None when ``max`` or not dumped."""
    fields = dump.get("cpu.max", "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return int(fields[0]) / int(fields[1])


def _cpu_series(samples: Sequence[Mapping[str, int]], key: str) -> list[tuple[int, int]]:
    return [(s[TIME_KEY], s[key]) for s in samples if TIME_KEY in s and key in s]


def cpu_usage_rate(samples: Sequence[Mapping[str, int]], skip_first_s: float = 0.5) -> float | None:
    """CPU the group used per unit of guest time, in cores: Δusage_usec / Δguest time.

    Samples within ``skip_first_s`` of the first sample are skipped (the payload is still
    starting and joining its group); the rate runs from the first kept sample to the last
    one. Both clocks are the guest's, so this is a ratio of guest time to guest time and
    never meets a host timestamp. None with fewer than two kept samples.
    """
    series = _cpu_series(samples, "usage_usec")
    if not series:
        return None
    start_ms = series[0][0] + skip_first_s * 1000
    kept = [point for point in series if point[0] >= start_ms]
    if len(kept) < 2 or kept[-1][0] <= kept[0][0]:
        return None
    (t0_ms, usage0_usec), (t1_ms, usage1_usec) = kept[0], kept[-1]
    return (usage1_usec - usage0_usec) / ((t1_ms - t0_ms) * 1000)


def cpu_throttled_rise(samples: Sequence[Mapping[str, int]]) -> int | None:
    """How much cpu.stat nr_throttled rose over the series; None with fewer than two samples."""
    series = _cpu_series(samples, "nr_throttled")
    if len(series) < 2:
        return None
    return series[-1][1] - series[0][1]
