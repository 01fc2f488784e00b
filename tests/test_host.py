"""Tests for bench.host: parsers on captured and hand-written files, collectors on fake trees."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bench import __version__
from bench.host import (
    collect_host_facts,
    load_snapshot,
    parse_bracketed_choice,
    parse_cpuinfo,
    parse_loadavg,
    parse_meminfo,
    parse_os_release,
)

DATA = Path(__file__).parent / "data" / "host"
# Copied verbatim from the dev machine (a Firecracker guest), see data/host/README.md.
CAPTURED = DATA / "captured_debian12_firecracker_vm"
# Written by hand to stand for a bare-metal lab host; not captured from a real machine.
HANDWRITTEN = DATA / "handwritten_ubuntu2404_baremetal"

KIB = 1024


def _text(root: Path, path: str) -> str:
    return (root / path).read_text()


def _write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


# --- parse_meminfo ------------------------------------------------------------------------


def test_parse_meminfo_captured_converts_kb_to_bytes() -> None:
    meminfo = parse_meminfo(_text(CAPTURED, "proc/meminfo"))
    assert meminfo["MemTotal"] == 24684092 * KIB
    assert meminfo["MemAvailable"] == 24282040 * KIB
    assert meminfo["SwapTotal"] == 0
    assert meminfo["Hugepagesize"] == 2048 * KIB
    assert meminfo["DirectMap1G"] == 25165824 * KIB
    # 54 lines, of which the 4 HugePages_* page counts carry no unit and are left out.
    assert len(meminfo) == 50
    assert "HugePages_Total" not in meminfo


def test_parse_meminfo_handwritten_has_swap() -> None:
    meminfo = parse_meminfo(_text(HANDWRITTEN, "proc/meminfo"))
    assert meminfo["SwapTotal"] == 8388604 * KIB
    assert meminfo["MemTotal"] == 65759720 * KIB
    assert "HugePages_Free" not in meminfo


def test_parse_meminfo_skips_malformed_lines() -> None:
    text = "MemTotal: 100 kB\nGarbage line\nMemFree: lots kB\nMemAvailable:   7 kB\n"
    assert parse_meminfo(text) == {"MemTotal": 100 * KIB, "MemAvailable": 7 * KIB}


# --- parse_cpuinfo ------------------------------------------------------------------------


def test_parse_cpuinfo_captured_firecracker_guest() -> None:
    assert parse_cpuinfo(_text(CAPTURED, "proc/cpuinfo")) == {
        "model": "Intel(R) Xeon(R) Processor",
        "logical_cores": 2,
        "physical_cores": 2,
        "flags_of_interest": {"vmx": False, "svm": False, "hypervisor": True},
        "virtualized": True,
    }


def test_parse_cpuinfo_handwritten_baremetal_with_smt() -> None:
    assert parse_cpuinfo(_text(HANDWRITTEN, "proc/cpuinfo")) == {
        "model": "AMD EPYC 7313P 16-Core Processor",
        "logical_cores": 4,
        "physical_cores": 2,
        "flags_of_interest": {"vmx": False, "svm": True, "hypervisor": False},
        "virtualized": False,
    }


def test_parse_cpuinfo_without_topology_or_flags() -> None:
    # Shape of some ARM kernels: no model name, no physical id/core id, "Features" not "flags".
    text = "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd\n\nprocessor\t: 1\n"
    assert parse_cpuinfo(text) == {
        "model": None,
        "logical_cores": 2,
        "physical_cores": None,
        "flags_of_interest": None,
        "virtualized": None,
    }


def test_parse_cpuinfo_empty_text() -> None:
    assert parse_cpuinfo("")["logical_cores"] == 0


# --- parse_os_release ---------------------------------------------------------------------


def test_parse_os_release_captured_debian() -> None:
    fields = parse_os_release(_text(CAPTURED, "etc/os-release"))
    assert fields["ID"] == "debian"
    assert fields["VERSION_ID"] == "12"
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert fields["VERSION_CODENAME"] == "bookworm"
    assert len(fields) == 9


def test_parse_os_release_handwritten_ubuntu() -> None:
    fields = parse_os_release(_text(HANDWRITTEN, "etc/os-release"))
    assert fields["ID"] == "ubuntu"
    assert fields["ID_LIKE"] == "debian"
    assert fields["VERSION_ID"] == "24.04"
    assert fields["PRETTY_NAME"] == "Ubuntu 24.04.1 LTS"


def test_parse_os_release_quotes_escapes_and_comments() -> None:
    text = (
        "# a comment\n"
        "\n"
        "NAME='Single Quoted'\n"
        'PRETTY_NAME="Say \\"hi\\" for \\$5"\n'
        "ID=plain\n"
        "not a key value line\n"
    )
    assert parse_os_release(text) == {
        "NAME": "Single Quoted",
        "PRETTY_NAME": 'Say "hi" for $5',
        "ID": "plain",
    }


# --- parse_bracketed_choice ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        (CAPTURED, "sys/kernel/mm/transparent_hugepage/enabled", "madvise"),
        (CAPTURED, "sys/kernel/mm/transparent_hugepage/defrag", "madvise"),
        (HANDWRITTEN, "sys/kernel/mm/transparent_hugepage/enabled", "always"),
        (HANDWRITTEN, "sys/kernel/mm/transparent_hugepage/defrag", "defer+madvise"),
    ],
)
def test_parse_bracketed_choice_files(root: Path, path: str, expected: str) -> None:
    assert parse_bracketed_choice(_text(root, path)) == expected


@pytest.mark.parametrize("text", ["", "always madvise never\n", "[]"])
def test_parse_bracketed_choice_none_without_selection(text: str) -> None:
    assert parse_bracketed_choice(text) is None


# --- parse_loadavg ------------------------------------------------------------------------


def test_parse_loadavg_captured() -> None:
    assert parse_loadavg(_text(CAPTURED, "proc/loadavg")) == {"1m": 0.18, "5m": 0.16, "15m": 0.08}


def test_parse_loadavg_handwritten() -> None:
    assert parse_loadavg(_text(HANDWRITTEN, "proc/loadavg")) == {
        "1m": 0.52,
        "5m": 0.58,
        "15m": 0.59,
    }


@pytest.mark.parametrize("text", ["", "0.1 0.2", "a b c 1/2 3"])
def test_parse_loadavg_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"loadavg|could not convert"):
        parse_loadavg(text)


# --- collect_host_facts on fake trees -----------------------------------------------------


def test_collect_host_facts_handwritten_baremetal_tree() -> None:
    facts = collect_host_facts(root=str(HANDWRITTEN))
    assert facts["hostname"] == "lab01"
    assert facts["kernel"] == {
        "release": "6.8.0-45-generic",
        "version": "#45-Ubuntu SMP PREEMPT_DYNAMIC Fri Aug 30 12:02:04 UTC 2024",
        "cmdline": "BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=/dev/mapper/vg0-root ro "
        "amd_iommu=on iommu=pt quiet",
    }
    assert facts["distro"] == {
        "id": "ubuntu",
        "version_id": "24.04",
        "pretty_name": "Ubuntu 24.04.1 LTS",
    }
    assert facts["cpu"]["virtualized"] is False
    assert facts["memory"] == {"total_bytes": 65759720 * KIB, "available_bytes": 62140332 * KIB}
    assert facts["swap_total_bytes"] == 8388604 * KIB
    assert facts["ksm"] == {"run": 1, "pages_sharing": 51200, "pages_shared": 2048}
    assert facts["thp"] == {"enabled": "always", "defrag": "defer+madvise"}
    assert facts["cpu_governor"] == {f"cpu{i}": "performance" for i in range(4)}
    assert facts["loadavg"] == {"1m": 0.52, "5m": 0.58, "15m": 0.59}
    assert facts["kvm"] == {"dev_kvm_present": True}
    assert facts["init"] == {"pid1_comm": "systemd"}
    # No proc/self/mounts in the tree, so the cgroup layout cannot be detected.
    assert facts["cgroup"] is None
    json.dumps(facts, allow_nan=False)


def test_collect_host_facts_captured_vm_tree() -> None:
    facts = collect_host_facts(root=str(CAPTURED))
    assert facts["hostname"] == "vm"
    assert facts["kernel"]["release"] == "6.18.44-fc-v657"
    assert facts["kernel"]["cmdline"].startswith("mitigations=auto,no_guest_host,no_guest_guest ")
    assert facts["cpu"]["virtualized"] is True
    assert facts["swap_total_bytes"] == 0
    assert facts["ksm"] == {"run": 0, "pages_sharing": 0, "pages_shared": 0}
    assert facts["thp"] == {"enabled": "madvise", "defrag": "madvise"}
    # The guest exposes no cpufreq, and /dev/kvm was not captured.
    assert facts["cpu_governor"] is None
    assert facts["kvm"] == {"dev_kvm_present": False}
    assert facts["init"] == {"pid1_comm": "process_api"}


def test_collect_host_facts_empty_tree_gives_none_not_errors(tmp_path: Path) -> None:
    facts = collect_host_facts(root=str(tmp_path))
    for key in (
        "hostname",
        "kernel",
        "distro",
        "cpu",
        "memory",
        "swap_total_bytes",
        "ksm",
        "thp",
        "cpu_governor",
        "loadavg",
        "init",
        "cgroup",
    ):
        assert facts[key] is None, key
    assert facts["kvm"] == {"dev_kvm_present": False}
    # These describe the running interpreter and checkout, not the tree.
    assert facts["python"]["implementation"]
    assert facts["bench"]["version"] == __version__
    json.dumps(facts, allow_nan=False)


def test_collect_host_facts_sparse_and_malformed_tree(tmp_path: Path) -> None:
    _write(tmp_path, "proc/sys/kernel/osrelease", "6.1.0-test\n")
    _write(tmp_path, "proc/loadavg", "not a load average\n")
    _write(tmp_path, "proc/meminfo", "MemTotal:  1000 kB\n")  # an old kernel: no MemAvailable
    _write(tmp_path, "sys/kernel/mm/ksm/run", "garbage\n")
    _write(tmp_path, "sys/kernel/mm/ksm/pages_shared", "12\n")
    _write(tmp_path, "sys/kernel/mm/transparent_hugepage/enabled", "always madvise never\n")
    _write(tmp_path, "usr/lib/os-release", 'ID=fallback\nPRETTY_NAME="Fallback OS"\n')
    (tmp_path / "proc/cpuinfo").mkdir()  # unreadable as a file: IsADirectoryError
    (tmp_path / "sys/devices/system/cpu/cpu0").mkdir(parents=True)  # no cpufreq

    facts = collect_host_facts(root=str(tmp_path))

    assert facts["kernel"] == {"release": "6.1.0-test", "version": None, "cmdline": None}
    assert facts["loadavg"] is None
    assert facts["memory"] == {"total_bytes": 1000 * KIB, "available_bytes": None}
    assert facts["swap_total_bytes"] is None
    assert facts["ksm"] == {"run": None, "pages_sharing": None, "pages_shared": 12}
    assert facts["thp"] is None  # enabled has no bracketed choice, defrag is absent
    assert facts["distro"] == {"id": "fallback", "version_id": None, "pretty_name": "Fallback OS"}
    assert facts["cpu"] is None
    assert facts["cpu_governor"] is None


def test_cpu_governor_sorted_numerically_and_skips_cpus_without_cpufreq(tmp_path: Path) -> None:
    cpu_base = "sys/devices/system/cpu"
    _write(tmp_path, f"{cpu_base}/cpu10/cpufreq/scaling_governor", "powersave\n")
    _write(tmp_path, f"{cpu_base}/cpu2/cpufreq/scaling_governor", "performance\n")
    (tmp_path / cpu_base / "cpu3").mkdir()
    (tmp_path / cpu_base / "cpufreq").mkdir()  # not a CPU directory
    governors = collect_host_facts(root=str(tmp_path))["cpu_governor"]
    assert governors == {"cpu2": "performance", "cpu10": "powersave"}
    assert list(governors) == ["cpu2", "cpu10"]


def test_cgroup_layout_comes_from_bench_cgroups(tmp_path: Path) -> None:
    layout = pytest.importorskip("bench.cgroups.layout")
    _write(tmp_path, "proc/self/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n")
    _write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    cgroup = collect_host_facts(root=str(tmp_path))["cgroup"]
    assert cgroup is not None
    assert cgroup == layout.detect(str(tmp_path)).to_dict()


def test_bench_git_fields_none_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no git executable
    bench = collect_host_facts(root=str(tmp_path))["bench"]
    assert bench == {"version": __version__, "git_revision": None, "git_dirty": None}


# --- load_snapshot ------------------------------------------------------------------------


def test_load_snapshot_handwritten_tree() -> None:
    snapshot = load_snapshot(root=str(HANDWRITTEN))
    assert snapshot["loadavg"] == {"1m": 0.52, "5m": 0.58, "15m": 0.59}
    assert snapshot["mem_available_bytes"] == 62140332 * KIB
    assert set(snapshot) == {"loadavg", "mem_available_bytes", "collected_at_utc"}


def test_load_snapshot_empty_tree(tmp_path: Path) -> None:
    snapshot = load_snapshot(root=str(tmp_path))
    assert snapshot["loadavg"] is None
    assert snapshot["mem_available_bytes"] is None
    assert snapshot["collected_at_utc"].endswith("+00:00")


# --- the real host ------------------------------------------------------------------------


def test_collect_host_facts_real_host() -> None:
    facts = collect_host_facts()
    assert facts["kernel"]["release"] == os.uname().release
    assert facts["hostname"] == os.uname().nodename
    assert facts["cpu"]["logical_cores"] == os.cpu_count()
    assert facts["memory"]["total_bytes"] > 0
    revision = facts["bench"]["git_revision"]
    assert revision is None or re.fullmatch(r"[0-9a-f]{40}", revision)
    assert json.loads(json.dumps(facts, allow_nan=False)) == facts


def test_load_snapshot_real_host() -> None:
    snapshot = load_snapshot()
    assert snapshot["loadavg"]["1m"] >= 0.0
    assert snapshot["mem_available_bytes"] > 0
    json.dumps(snapshot, allow_nan=False)
