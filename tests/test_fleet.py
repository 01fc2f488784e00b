"""Two hosts through ansible/fleet.yml: this machine and a real second host with another kernel.

The second host is the lab host bench builds and boots itself (``bench.fleet.labhost``):
Debian bookworm with its own kernel (6.1), systemd as PID 1, cgroup v2 unified, sshd on
a loopback port, under QEMU (TCG on the dev and CI machines). One campaign provisions
both hosts with the bench_host role (the guest takes the role's systemd branch), installs
bench from the controller's wheelhouse with ``--no-index``, runs scenarios/fleet-quick.yaml
on both one at a time, fetches the runs and merges them; ``compare --group-by kernel``
then calls the two kernels incomparable (with the reasons) and, with the must-match keys
overridden, gives per-backend verdicts. Then: provision and install again change
nothing, and a campaign whose lab host lost its sshd keeps this machine's run and says
why the other is missing.

The image is a cached artefact (built once per recipe: about 100 s here); the test's
cost is the boot (about 20 s) and Ansible on an emulated host. Everything it starts, it
stops: the guest by its QEMU pid, and nothing of a boot survives it (QEMU's
snapshot=on overlay is a file QEMU already unlinked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, skip_or_fail
from tests.test_provision import parse_play_recap

pytestmark = pytest.mark.fleet

SCENARIO = REPO / "scenarios" / "fleet-quick.yaml"
# The keys on which this machine and its guest differ, and a user may choose to ignore.
IGNORED_KEYS = ("cpu.model", "memory.total_bytes", "cgroup.version")


@pytest.fixture(scope="module")
def lab_host() -> Iterator[Any]:
    """The lab host, booted for this module and owned by this test process."""
    from bench.errors import BenchError
    from bench.fleet import labhost, labhost_image

    if os.geteuid() != 0:
        skip_or_fail("the fleet test needs root (debootstrap, QEMU, provisioning)")
    for tool in ("debootstrap", "qemu-system-x86_64", "mkfs.ext4", "ssh"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not found: run ansible/up.sh")
    started = time.monotonic()
    try:
        image = labhost_image.build_labhost()
        built_s = time.monotonic() - started
        # a name of this session's own: another session's lab host is never shared
        host = labhost.up(f"fleet-{os.getpid()}", owner_pid=os.getpid())
    except BenchError as exc:
        skip_or_fail(f"no lab host: {exc}")
    print(
        f"\nlab host image {image.directory.name}: ready in {built_s:.1f} s "
        f"(built in {image.manifest['timings_s']['total_s']} s when first made); "
        f"booted under {host.accel.upper()}, ssh after {host.boot_to_ssh_s} s"
    )
    try:
        yield host
    finally:
        labhost.stop(host)
        assert not host.alive()


def _inventory(tmp_path: Path, host: Any) -> Path:
    from bench.fleet.labhost import write_inventory

    return write_inventory([host], tmp_path / "inventory.yml", local_host="local")


def _campaign(inventory: Path, results: Path, **options: Any) -> Any:
    from bench.fleet.campaign import run_campaign

    outcome = run_campaign(inventory, SCENARIO, results, serial="1", **options)
    print(
        f"\ncampaign {outcome.campaign_id}: {outcome.wall_s:.0f} s, "
        f"ansible-playbook exit {outcome.playbook_rc}"
    )
    return outcome


def _facts(run_dir: Path) -> Any:
    return json.loads((run_dir / "run.json").read_text())


def test_two_hosts_two_kernels_one_campaign(lab_host: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    inventory = _inventory(tmp_path, lab_host)

    outcome = _campaign(inventory, results, ignore_keys=IGNORED_KEYS)
    summary = outcome.summary
    log = (outcome.directory / "ansible.log").read_text()
    hosts = {h["host"]: h for h in summary["hosts"]}
    assert hosts["local"]["status"] == "ok", (hosts, log[-3000:])
    guest_name = lab_host.name
    assert hosts[guest_name]["status"] == "ok", (hosts, log[-3000:])

    # each run came back to results/<host>/<run_id>/, beside its campaign
    local_run = Path(hosts["local"]["results"])
    guest_run = Path(hosts[guest_name]["results"])
    for run in (local_run, guest_run):
        assert run.parent.parent == results.resolve()
        assert (run / "samples.jsonl").stat().st_size > 0
        assert json.loads((run / "campaign.json").read_text())["campaign_id"] == (
            outcome.campaign_id
        )
    local, guest = _facts(local_run), _facts(guest_run)
    assert local["status"] == guest["status"] == "complete"
    assert guest["host"]["hostname"] == guest_name
    # another kernel, systemd, cgroup v2 unified, and bench's cgroups delegated by systemd
    assert guest["host"]["kernel"]["release"] != local["host"]["kernel"]["release"]
    assert guest["host"]["kernel"]["release"].startswith("6.1.")
    assert guest["host"]["cgroup"]["mode"] == "unified"
    process = guest["software"]["process"]
    assert "delegated by systemd" in process["cgroup_parent"], process
    assert guest["software"]["docker"]["cgroup_driver"] == "systemd"
    # the very artefacts the controller built: no gcc was needed there
    probe = local["artefacts"]["process"]["probe_sha256"]
    assert guest["artefacts"]["process"]["probe_sha256"] == probe
    assert guest["artefacts"]["docker"]["image_tag"] == local["artefacts"]["docker"]["image_tag"]

    # compare --group-by kernel: strict, the must-match keys make it incomparable...
    kernel = summary["comparisons"]["kernel"]
    reasons = " ".join(r for rs in kernel["incomparable"].values() for r in rs)
    assert "cgroup.version differs (1 vs 2)" in reasons, kernel
    assert "cpu.model differs" in reasons, kernel
    # ...and with the user's override, per-backend verdicts between the two kernels
    suffix = "-ignoring-" + "-".join(k.replace(".", "_") for k in IGNORED_KEYS)
    overridden = summary["comparisons"][f"kernel{suffix}"]
    assert overridden["incomparable"] == {}, overridden
    verdicts = overridden["verdicts"]
    for backend in ("process", "docker"):
        assert any(key.startswith(f"startup {backend} ") for key in verdicts), verdicts
    markdown = (outcome.directory / overridden["markdown"]).read_text()
    assert "Comparison by kernel" in markdown
    assert (outcome.directory / "compare-host.md").is_file()
    assert (outcome.directory / "report.html").stat().st_size > 10_000
    from bench.report.site import run_page_path

    # bench publish over everything collected: both hosts, both kernels, one page each
    site = tmp_path / "reports" / "site"
    index = (site / "index.html").read_text()
    for run, facts in ((local_run, local), (guest_run, guest)):
        assert facts["host"]["kernel"]["release"] in index
        page = run_page_path(facts["host"]["hostname"], run.name)
        assert (site / page).is_file(), (run, page)

    # provision and install again: nothing changes on either host
    again = _campaign(
        inventory,
        results,
        tags=("provision", "install"),
        campaign_id=outcome.campaign_id,
    )
    again_log = (again.directory / "ansible.log").read_text()
    recap = parse_play_recap(_plain(again_log))
    for host in ("local", guest_name):
        assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0, recap
        assert recap[host]["changed"] == 0, (host, _changed_by_host(_plain(again_log)))

    # a host that fails mid-campaign: its sshd stops; the other host's run is kept, and
    # the merge says which host is missing and why
    # sshd masked (so systemd does not restart it) and killed, and every session of the
    # bench user ended (the connection Ansible keeps open lives in one of them)
    stopped = subprocess.run(
        lab_host.ssh_argv(
            "sudo",
            "sh",
            "-c",
            "systemctl mask --runtime ssh.service ssh.socket && "
            "systemctl kill --signal=SIGKILL ssh.service && "
            "loginctl terminate-user bench",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert stopped.returncode in (0, 255), stopped.stderr
    refused = subprocess.run(
        lab_host.ssh_argv("true"), capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 255, refused
    failed = _campaign(inventory, results, tags=("run", "collect"))
    hosts = {h["host"]: h for h in failed.summary["hosts"]}
    assert hosts["local"]["status"] == "ok", hosts
    assert hosts[guest_name]["status"] == "failed", hosts
    assert hosts[guest_name]["stage"] == "run"
    assert "unreachable" in hosts[guest_name]["reason"], hosts
    text = (failed.directory / "summary.md").read_text()
    assert "## Hosts without results" in text and f"**{guest_name}**" in text
    assert f"host {guest_name}: no results" in (failed.directory / "report.html").read_text()


def _plain(log: str) -> str:
    """ansible-playbook's output from a campaign log (each line is '  12.3 s | ...')."""
    return "\n".join(
        line.split(" | ", 1)[1] if " s | " in line else line for line in log.splitlines()
    )


def _changed_by_host(output: str) -> dict[str, list[str]]:
    """The tasks that reported 'changed', per host, in ansible-playbook output."""
    found: dict[str, list[str]] = {}
    task = ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6 : line.rfind("]")]
        elif line.startswith("changed: ["):
            host = line[len("changed: [") : line.index("]")]
            found.setdefault(host, []).append(task)
    return found
