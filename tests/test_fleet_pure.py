"""The fleet's pure parts: apt sources, the lab host recipe, inventories, the merge, shipping."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.artifacts import static_build
from bench.artifacts.cache_files import sha256_file
from bench.cgroups import delegation
from bench.cgroups.events_watch import MemoryEventsWatch
from bench.cgroups.layout import CgroupLayout
from bench.errors import ArtifactError
from bench.fleet import campaign, labhost, labhost_image, labhost_recipe, merge, shipping
from tests.synthetic_runs import blocks, write_run

DEBIAN_SOURCES = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
OTHER_SOURCES = """Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""


# -- the lab host's recipe ----------------------------------------------------------------


def test_apt_sources_keep_only_debian_archives_of_this_release() -> None:
    found = labhost_recipe.parse_apt_sources(
        [DEBIAN_SOURCES, OTHER_SOURCES],
        [
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
            "deb [arch=amd64] http://mirror.example/debian/ bookworm contrib main # comment\n",
            "deb-src http://deb.debian.org/debian bookworm main\n",
            "deb http://deb.debian.org/debian bullseye main\n",
        ],
    )
    assert found == [
        labhost_recipe.AptSource(
            "http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)
        ),
        labhost_recipe.AptSource(
            "http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)
        ),
        labhost_recipe.AptSource(
            "http://mirror.example/debian", ("bookworm",), ("contrib", "main")
        ),
    ]


def test_recipe_needs_a_bookworm_archive_and_its_key_follows_the_packages() -> None:
    sources = labhost_recipe.parse_apt_sources([DEBIAN_SOURCES], [])
    with pytest.raises(labhost_recipe.LabHostError, match="no Debian bookworm archive"):
        labhost_recipe.recipe(sources=[], packages=["docker.io"])
    first = labhost_recipe.recipe(sources=sources, packages=["docker.io"])
    assert labhost_recipe.recipe_key(first) == labhost_recipe.recipe_key(
        labhost_recipe.recipe(sources=sources, packages=["docker.io"])
    )
    assert labhost_recipe.recipe_key(first) != labhost_recipe.recipe_key(
        labhost_recipe.recipe(sources=sources, packages=["docker.io", "runc"])
    )
    # what a lab host must carry besides the role's packages
    for package in ("systemd-sysv", "openssh-server", "python3-apt", "python3-venv", "apparmor"):
        assert package in first["base_packages"]
    assert "docker.service" in first["disabled_units"]
    assert "apt-daily.timer" in first["masked_units"]


def test_role_packages_come_from_the_role_defaults(tmp_path: Path) -> None:
    defaults = tmp_path / "main.yml"
    defaults.write_text(
        yaml.safe_dump(
            {
                "bench_host_packages": ["docker.io", "gcc"],
                "bench_host_gvisor_packages": ["runsc"],
                "bench_host_podman_packages": ["podman", "runc"],
                "bench_host_libvirt_packages": ["qemu-system-x86", "gcc"],
                "bench_host_libvirt_systemd_packages": ["libvirt-daemon-system"],
                "bench_host_chromium_packages": ["chromium"],
            }
        )
    )
    packages = labhost_recipe.role_packages(defaults)
    assert packages == [
        "docker.io",
        "gcc",
        "runsc",
        "podman",
        "runc",
        "qemu-system-x86",
        "libvirt-daemon-system",
    ]
    # the real role: every list the recipe reads exists
    real = labhost_recipe.role_packages()
    assert "docker.io" in real and "libvirt-daemon-system" in real and "chromium" not in real


def test_qemu_command_line_forwards_only_loopback_and_restricts_the_guest(tmp_path: Path) -> None:
    image = labhost_image.LabHostImage(tmp_path, "k" * 64, {"ssh_host_key": "ssh-ed25519 AAAA"})
    argv = labhost.qemu_argv(image, "lab1", 40022, "tcg", 2048, 2, tmp_path)
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev.split(",")
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev.split(",")
    assert argv[argv.index("-name") + 1] == "bench-labhost-lab1"
    drive = argv[argv.index("-drive") + 1]
    assert "snapshot=on" in drive.split(",")  # the cached image is never written
    assert argv[argv.index("-cpu") + 1] == "max"
    assert "systemd.hostname=lab1" in argv[argv.index("-append") + 1]
    assert "-daemonize" in argv
    kvm = labhost.qemu_argv(image, "lab1", 40022, "kvm", 2048, 2, tmp_path)
    assert kvm[kvm.index("-cpu") + 1] == "host"


def _host(tmp_path: Path, **changes: object) -> labhost.LabHost:
    values: dict[str, object] = {
        "name": "lab1",
        "pid": 1,
        "pid_create_time": 0.0,
        "port": 40022,
        "image_key": "k" * 64,
        "image_dir": str(tmp_path / "image"),
        "kernel_release": "6.1.0-50-cloud-amd64",
        "accel": "tcg",
        "accel_reason": "TCG requested",
        "memory_mib": 2048,
        "cpus": 2,
        "boot_to_ssh_s": 20.0,
        "started_at_utc": "2026-12-01T00:00:00Z",
        "state_dir": str(tmp_path / "state"),
    }
    values.update(changes)
    return labhost.LabHost(**values)  # type: ignore[arg-type]


def test_inventory_reaches_the_guest_over_loopback_with_its_host_key(tmp_path: Path) -> None:
    host = _host(tmp_path)
    path = labhost.write_inventory([host], tmp_path / "inv.yml", local_host="local")
    data = yaml.safe_load(path.read_text())
    members = data["all"]["children"]["lab"]["hosts"]
    assert list(members) == ["local", "lab1"]
    assert members["local"]["ansible_connection"] == "local"
    lab1 = members["lab1"]
    assert lab1["ansible_host"] == "127.0.0.1" and lab1["ansible_port"] == 40022
    assert lab1["ansible_user"] == "bench" and lab1["ansible_become"] is True
    assert "StrictHostKeyChecking=yes" in lab1["ansible_ssh_common_args"]
    assert "HostKeyAlias=bench-labhost-lab1" in lab1["ansible_ssh_common_args"]
    assert lab1["bench_host_apt_update_cache"] is False
    assert "emulation figures" in lab1["bench_fleet_host_note"]
    assert campaign.inventory_hosts(path) == ["local", "lab1"]
    assert campaign.inventory_hosts(path, "other") == []


def test_a_lab_host_is_held_by_the_user_or_a_live_owner(tmp_path: Path) -> None:
    assert _host(tmp_path, kept=True).held()
    assert not _host(tmp_path).held()
    import psutil

    me = psutil.Process(os.getpid())
    assert _host(tmp_path, owner_pid=me.pid, owner_create_time=me.create_time()).held()
    # a pid reused by another process is not the owner
    assert not _host(tmp_path, owner_pid=me.pid, owner_create_time=me.create_time() - 5).held()
    # and no QEMU runs with pid 1's identity: not alive, never signalled
    assert not _host(tmp_path).alive()


# -- the merge --------------------------------------------------------------------------


LOG = """TASK [bench_campaign : Check that the host answers] ****
fatal: [lab2]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh: Connection refused", "unreachable": true}
fatal: [lab3]: FAILED! => {"changed": false, "msg": "first"}
fatal: [lab3]: FAILED! => {"changed": false, "msg": "second"}
"""


def test_reasons_are_read_from_ansibles_log() -> None:
    reasons = merge.reasons_from_log(LOG)
    assert reasons == {
        "lab2": "unreachable: Failed to connect to the host via ssh: Connection refused",
        "lab3": "failed: second",
    }


def _two_host_campaign(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    results = tmp_path / "results"
    directory = results / "campaigns" / "c1"
    (directory / "hosts").mkdir(parents=True)
    runs = {}
    for host, kernel, cgroup, shift in (("vm", "6.18.44", 1, 1.0), ("lab1", "6.1.0-50", 2, 3.0)):
        run = write_run(
            results,
            f"20261201T000000Z-fleet-{host}",
            {
                "process": blocks(rng, 3, centre=0.002 * shift),
                "docker": blocks(rng, 3, centre=0.1 * shift),
            },
            hostname=host,
        )
        record = json.loads((run / "run.json").read_text())
        record["host"]["kernel"]["release"] = kernel
        record["host"]["cgroup"]["version"] = cgroup
        (run / "run.json").write_text(json.dumps(record))
        runs[host] = run
    for inventory_name, host in (("local", "vm"), ("lab1", "lab1")):
        (directory / "hosts" / f"{inventory_name}.json").write_text(
            json.dumps(
                {
                    "host": inventory_name,
                    "status": "ok",
                    "stage": "collect",
                    "run_id": runs[host].name,
                    "results": str(runs[host]),
                }
            )
        )
    return directory, results


def test_merge_compares_by_host_and_kernel_and_says_why_hosts_are_incomparable(
    tmp_path: Path,
) -> None:
    directory, _results = _two_host_campaign(tmp_path)
    summary = merge.merge_campaign(directory, ["local", "lab1"], ignore_keys=["cgroup.version"])
    assert [h["status"] for h in summary["hosts"]] == ["ok", "ok"]
    assert summary["missing"] == {}
    kernel = summary["comparisons"]["kernel"]
    assert set(kernel["groups"]) == {"6.18.44", "6.1.0-50"}
    reasons = [r for rs in kernel["incomparable"].values() for r in rs]
    assert any("cgroup.version differs (1 vs 2)" in r for r in reasons), reasons
    overridden = summary["comparisons"]["kernel-ignoring-cgroup_version"]
    assert overridden["incomparable"] == {}
    # one run per host: nothing measured how much two runs differ by chance, so even a
    # threefold difference gets no verdict (several boots per kernel do: the kernel matrix)
    assert set(overridden["verdicts"].values()) == {"inconclusive: run-to-run noise unknown"}, (
        overridden["verdicts"]
    )
    assert (directory / "compare-kernel.md").is_file()
    assert json.loads((directory / "compare-host.json").read_text())["group_by"] == "host"
    assert (directory / "report.html").stat().st_size > 10_000
    assert "| local | ok |" in (directory / "summary.md").read_text()


def test_merge_marks_a_host_that_failed_or_never_answered(tmp_path: Path) -> None:
    directory, _results = _two_host_campaign(tmp_path)
    (directory / "hosts" / "lab1.json").write_text(
        json.dumps(
            {
                "host": "lab1",
                "status": "failed",
                "stage": "run",
                "reason": "lost during the run: Connection refused",
            }
        )
    )
    (directory / merge.LOG_NAME).write_text(LOG)
    summary = merge.merge_campaign(directory, ["local", "lab1", "lab2"])
    by_host = {h["host"]: h for h in summary["hosts"]}
    assert by_host["local"]["status"] == "ok"
    assert by_host["lab1"]["status"] == "failed"
    assert by_host["lab2"]["status"] == "missing"
    assert "Connection refused" in summary["missing"]["lab2"]
    assert summary["missing"]["lab1"].startswith("failed (run): lost during the run")
    text = (directory / "summary.md").read_text()
    assert "## Hosts without results" in text and "**lab2**" in text
    # one host left: nothing to compare it with, and the merge says so
    assert "need at least two" in summary["comparisons"]["kernel"]["error"]
    report = (directory / "report.html").read_text()
    assert "host lab1: no results (failed at run): lost during the run" in report


# -- shipping ---------------------------------------------------------------------------


def test_dependency_pins_cover_the_runtime_closure_not_the_dev_tools() -> None:
    pins = shipping.dependency_pins()
    names = {p.split("==")[0] for p in pins}
    assert {"docker", "pandas", "numpy", "pydantic", "typer", "libvirt-python"} <= names
    assert not names & {"pytest", "ruff", "mypy", "ansible-core", "bench"}
    assert all("==" in p for p in pins)


def test_tree_hash_follows_the_source_and_ignores_caches(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "bench" / "a.py").write_text("x = 1\n")
    first = shipping.tree_sha256(tmp_path)
    (tmp_path / "bench" / "__pycache__").mkdir()
    (tmp_path / "bench" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert shipping.tree_sha256(tmp_path) == first
    (tmp_path / "bench" / "a.py").write_text("x = 2\n")
    assert shipping.tree_sha256(tmp_path) != first


def test_a_static_binary_is_found_by_its_source_before_gcc_is_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    source = b"int main(void) { return 0; }\n"
    built = static_build.build("tiny", source, ("-static", "-O2"), tmp_path / "a", "fix it")
    assert built.sha256 == sha256_file(built.path)
    assert built.path.name == f"tiny-{built.sha256[:16]}"
    # shipped to a host with no compiler at all
    host_cache = tmp_path / "host"
    static_build.export(built, tmp_path / "a", "tiny", host_cache)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = static_build.build("tiny", source, ("-static", "-O2"), host_cache, "fix it")
    assert found.sha256 == built.sha256 and found.path.parent == host_cache
    # bytes that do not match the index are not used, and without gcc that is an error
    found.path.chmod(stat.S_IWUSR | stat.S_IRUSR)
    found.path.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="gcc not found and no tiny built from this source"):
        static_build.build("tiny", source, ("-static", "-O2"), host_cache, "fix it")


# -- cgroups ----------------------------------------------------------------------------


def test_own_cgroup_path_and_when_delegation_is_needed(tmp_path: Path) -> None:
    assert delegation.own_cgroup_path("0::/user.slice/session-3.scope\n") == (
        "/user.slice/session-3.scope"
    )
    assert delegation.own_cgroup_path("12:memory:/x\n0::/\n") == "/"
    with pytest.raises(delegation.CgroupDelegationError):
        delegation.own_cgroup_path("4:memory:/bench\n")
    unified = CgroupLayout(2, "unified", {}, "/sys/fs/cgroup", ("memory", "cpu", "pids"))
    hybrid = CgroupLayout(
        1, "hybrid", {"memory": "/sys/fs/cgroup/memory"}, "/sys/fs/cgroup/unified"
    )
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert delegation.needs_delegation(unified, str(tmp_path))
    assert not delegation.needs_delegation(hybrid, str(tmp_path))
    assert not delegation.needs_delegation(unified, str(tmp_path / "elsewhere"))
    assert delegation.unit_of(Path("/sys/fs/cgroup/system.slice/bench-1-ab.scope/harness")) == (
        "bench-1-ab.scope"
    )


def test_memory_events_are_read_on_every_change_until_the_file_goes(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    watch = MemoryEventsWatch(tmp_path).start()
    events.write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    # the kernel removes a cgroup's files with the cgroup: here, the file goes
    deadline = 100
    while watch.last.get("oom_kill") != 1 and deadline:
        deadline -= 1
        import time

        time.sleep(0.01)
    events.unlink()
    last = watch.stop()
    assert last["oom_kill"] == 1 and last["max"] == 7
    assert watch.reads >= 2


def test_ssh_argv_quotes_the_command_for_the_guests_shell(tmp_path: Path) -> None:
    argv = _host(tmp_path).ssh_argv("sudo", "sh", "-c", "a && b; echo '$x'")
    assert argv[0] == "ssh" and argv[-2] == "--"
    assert argv[-1] == "sudo sh -c 'a && b; echo '\"'\"'$x'\"'\"''"
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
