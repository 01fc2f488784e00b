"""A second lab host with another kernel: a Debian guest bench builds, boots and stops.

Its image is built and cached by ``bench.fleet.labhost_image`` from the recipe in
``bench.fleet.labhost_recipe``; stopping every lab host bench started (``bench clean``) is
``bench.fleet.labhost_cleanup``.

**A boot** (``up``) runs ``qemu-system-x86_64 -daemonize`` with the guest's sshd
forwarded to a free port of 127.0.0.1 only, and ``-netdev user,restrict=on``: the guest
reaches no address at all. KVM is used only when a real KVM boot proves it works on this
host (the qemu-microvm backend's decision, itself a real boot, cached per host boot) and
the lab host then comes up under it; otherwise TCG, and the reason is recorded. Each
running lab host has a state directory ``/run/bench/labhosts/<name>/`` (pid and its
start time, port, known_hosts, serial console log); ``down`` stops it by that pid, and
``bench clean`` stops every one bench started (also one whose state was lost: QEMU runs
with ``-name bench-labhost-<name>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.errors import BenchError
from bench.fleet.labhost_image import LabHostImage, build_labhost
from bench.fleet.labhost_recipe import LABHOST_USER, LabHostError
from bench.results import write_json_atomic

STATE_ROOT = Path("/run/bench/labhosts")
QEMU_NAME_PREFIX = "bench-labhost-"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 2
SSH_TIMEOUT_TCG_S = 300.0
SSH_TIMEOUT_KVM_S = 90.0
STOP_TIMEOUT_S = 15.0


@dataclass
class LabHost:
    """A running lab host: how to reach it and how to stop it."""

    name: str
    pid: int
    pid_create_time: float
    port: int
    image_key: str
    image_dir: str
    kernel_release: str
    accel: str
    accel_reason: str
    memory_mib: int
    cpus: int
    boot_to_ssh_s: float
    started_at_utc: str
    state_dir: str
    notes: list[str] = field(default_factory=list)
    # Who holds it: a process (a test session, a campaign) while it lives, or the user
    # (kept: started with `bench labhost up`, stopped by `labhost down` or `clean --all`).
    owner_pid: int | None = None
    owner_create_time: float | None = None
    kept: bool = False

    @property
    def ssh_key(self) -> Path:
        """The private key of the ``bench`` user."""
        return Path(self.image_dir) / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file holding exactly this guest's host key."""
        return Path(self.state_dir) / "known_hosts"

    @property
    def host_key_alias(self) -> str:
        """The name its host key is filed under (the port changes from boot to boot)."""
        return f"{QEMU_NAME_PREFIX}{self.name}"

    def ssh_options(self) -> list[str]:
        """``ssh`` options that reach this guest, checking its host key."""
        return [
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            f"HostKeyAlias={self.host_key_alias}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.port),
        ]

    def ssh_argv(self, *command: str, connect_timeout_s: int = 10) -> list[str]:
        """An ``ssh`` argv running ``command`` on the guest as the ``bench`` user.

        ssh hands the guest's shell one string: the words are quoted for it, so each
        stays one argument there.
        """
        return [
            "ssh",
            *self.ssh_options(),
            "-o",
            f"ConnectTimeout={connect_timeout_s}",
            f"{LABHOST_USER}@127.0.0.1",
            "--",
            shlex.join(command),
        ]

    def alive(self) -> bool:
        """True while this lab host's QEMU (not a reuser of its pid) runs."""
        return _qemu_alive(self.pid, self.pid_create_time, self.name)

    def held(self) -> bool:
        """True when the user keeps it, or the process that owns it still runs."""
        if self.kept:
            return True
        if self.owner_pid is None or self.owner_create_time is None:
            return False
        try:
            process = psutil.Process(self.owner_pid)
            return (
                abs(process.create_time() - self.owner_create_time) <= 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def inventory_vars(self) -> dict[str, Any]:
        """The Ansible host variables that reach it over SSH and become root with sudo."""
        common = " ".join(
            [
                f"-o UserKnownHostsFile={self.known_hosts}",
                f"-o HostKeyAlias={self.host_key_alias}",
                "-o StrictHostKeyChecking=yes",
                "-o IdentitiesOnly=yes",
            ]
        )
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": LABHOST_USER,
            "ansible_become": True,
            "ansible_ssh_private_key_file": str(self.ssh_key),
            "ansible_ssh_common_args": common,
            # Ansible's default adds -C: compressing wheels and images again only costs
            # the emulated guest CPU time
            "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=60s",
            "ansible_python_interpreter": "/usr/bin/python3",
            # the guest reaches no network: its packages are in the image already
            "bench_host_apt_update_cache": False,
            "bench_host_chromium_install": False,
            "bench_host_labhost_builder": False,
            "bench_fleet_host_note": self.note(),
        }

    def note(self) -> str:
        """What a reader of this host's figures must know (emulation, shared hardware)."""
        if self.accel == "tcg":
            return (
                f"QEMU guest of the controller under TCG (software emulation): its figures "
                f"are emulation figures, not this kernel's speed on hardware; "
                f"{self.cpus} vCPU, {self.memory_mib} MiB, mitigations=off"
            )
        return (
            f"QEMU/KVM guest of the controller; {self.cpus} vCPU, {self.memory_mib} MiB, "
            "mitigations=off"
        )


def _qemu_alive(pid: int, create_time: float, name: str) -> bool:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.05:
            return False
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return f"{QEMU_NAME_PREFIX}{name}" in process.cmdline()
    except psutil.Error:
        return False


def state_dir(name: str) -> Path:
    """The state directory of a running lab host."""
    return STATE_ROOT / name


def read_state(name: str) -> LabHost | None:
    """The recorded state of lab host ``name`` (None when there is none)."""
    try:
        data = json.loads((state_dir(name) / "state.json").read_text())
        return LabHost(**data)
    except (OSError, ValueError, TypeError):
        return None


def running_labhosts() -> list[LabHost]:
    """Lab hosts bench started whose QEMU still runs."""
    found = []
    if STATE_ROOT.is_dir():
        for directory in sorted(STATE_ROOT.iterdir()):
            host = read_state(directory.name)
            if host is not None and host.alive():
                found.append(host)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def qemu_argv(
    image: LabHostImage,
    name: str,
    port: int,
    accel: str,
    memory_mib: int,
    cpus: int,
    directory: Path,
) -> list[str]:
    """The QEMU command line of a lab host (no shell: every value is one argument)."""
    cmdline = " ".join(
        [
            "root=/dev/vda",
            "rw",
            "console=ttyS0",
            f"systemd.hostname={name}",
            # Under TCG every page-table switch (KPTI) flushes the emulated TLB: without
            # the mitigations an Ansible task on the guest takes ~35% less (measured)
            "mitigations=off",
        ]
    )
    return [
        "qemu-system-x86_64",
        "-name",
        f"{QEMU_NAME_PREFIX}{name}",
        "-accel",
        accel,
        "-M",
        "q35",
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{directory / 'serial.log'}",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        cmdline,
        "-drive",
        f"file={image.disk},if=virtio,format=raw,snapshot=on",
        "-netdev",
        f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-device",
        "virtio-rng-pci",
        "-daemonize",
        "-pidfile",
        str(directory / "qemu.pid"),
    ]


def decide_accel(requested: str) -> tuple[str, str]:
    """KVM or TCG for a lab host, and why: KVM only where a real KVM boot worked."""
    if requested in ("tcg", "kvm"):
        return requested, f"{requested.upper()} requested"
    try:
        from bench.backends import get_backend

        backend: Any = get_backend("qemu-microvm")
        backend.check_available()
        decision = backend.accel_decision("auto")
    except BenchError as exc:
        return "tcg", f"no KVM boot could be tried ({exc})"
    reason = " ".join(str(decision.reason).split())
    if len(reason) > 240:
        reason = reason[:240] + "..."
    return str(decision.accel), f"qemu-microvm's KVM probe: {reason}"


def up(
    name: str = "lab1",
    memory_mib: int = DEFAULT_MEMORY_MIB,
    cpus: int = DEFAULT_CPUS,
    accel: str = "auto",
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
    owner_pid: int | None = None,
    kept: bool = False,
) -> LabHost:
    """Boot lab host ``name`` (building the image if needed) and wait for its sshd.

    ``owner_pid``: the process it belongs to (``bench clean`` spares it while that
    process lives); ``kept``: the user's, spared by ``bench clean`` until ``--all``.
    A lab host of that name that already runs for the same owner is returned as it is;
    one held by someone else is an error (two test sessions must not share a guest).
    """
    say = log or (lambda _text: None)
    if not NAME_PATTERN.match(name):
        raise LabHostError(f"lab host name {name!r}: use lower-case letters, digits and '-'")
    running = read_state(name)
    if running is not None and running.alive():
        if running.owner_pid == owner_pid and running.kept == kept:
            return running
        holder = "the user (bench labhost up)" if running.kept else f"pid {running.owner_pid}"
        raise LabHostError(
            f"lab host {name} already runs (pid {running.pid}), held by {holder}: choose "
            "another name, or stop it with `bench labhost down`"
        )
    image = build_labhost(cache, log=say)
    chosen, reason = decide_accel(accel)
    owner = _Owner(owner_pid, kept)
    notes: list[str] = []
    if chosen == "kvm":
        try:
            return _boot(
                image, name, "kvm", reason, memory_mib, cpus, SSH_TIMEOUT_KVM_S, notes, say, owner
            )
        except LabHostError as exc:
            if accel == "kvm":
                raise
            notes.append(f"KVM boot failed, fell back to TCG: {exc}")
            reason = f"the lab host did not come up under KVM ({str(exc)[:200]})"
    return _boot(image, name, "tcg", reason, memory_mib, cpus, SSH_TIMEOUT_TCG_S, notes, say, owner)


@dataclass(frozen=True)
class _Owner:
    pid: int | None
    kept: bool


def _boot(
    image: LabHostImage,
    name: str,
    accel: str,
    reason: str,
    memory_mib: int,
    cpus: int,
    timeout_s: float,
    notes: list[str],
    say: Callable[[str], None],
    owner: _Owner,
) -> LabHost:
    directory = state_dir(name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    port = _free_port()
    say(f"booting {name} under {accel.upper()}, sshd on 127.0.0.1:{port}")
    started = time.monotonic()
    argv = qemu_argv(image, name, port, accel, memory_mib, cpus, directory)
    with open(directory / "qemu.log", "w") as qemu_log:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        text = (directory / "qemu.log").read_text(errors="replace").strip()
        shutil.rmtree(directory, ignore_errors=True)
        raise LabHostError(f"qemu could not start lab host {name}: {text[-500:]}")
    pid = int((directory / "qemu.pid").read_text().strip())
    host = LabHost(
        name=name,
        pid=pid,
        pid_create_time=psutil.Process(pid).create_time(),
        port=port,
        image_key=image.key,
        image_dir=str(image.directory),
        kernel_release=str(image.manifest.get("kernel_release")),
        accel=accel,
        accel_reason=reason,
        memory_mib=memory_mib,
        cpus=cpus,
        boot_to_ssh_s=0.0,
        started_at_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        state_dir=str(directory),
        notes=notes,
        owner_pid=owner.pid,
        owner_create_time=psutil.Process(owner.pid).create_time() if owner.pid else None,
        kept=owner.kept,
    )
    host.known_hosts.write_text(f"{host.host_key_alias} {image.host_key}\n")
    _write_state(host)
    try:
        _wait_for_ssh(host, started + timeout_s)
    except BaseException:
        stop(host)
        raise
    host.boot_to_ssh_s = round(time.monotonic() - started, 1)
    _write_state(host)
    say(f"{name} accepts ssh after {host.boot_to_ssh_s:.1f} s")
    return host


def _write_state(host: LabHost) -> None:
    write_json_atomic(Path(host.state_dir) / "state.json", asdict(host))


def _wait_for_ssh(host: LabHost, deadline: float) -> None:
    """Poll until ``ssh ... true`` succeeds (never a fixed sleep); fail with the console."""
    last = ""
    while time.monotonic() < deadline:
        if not host.alive():
            raise LabHostError(
                f"lab host {host.name}: qemu exited while booting\n{_console_tail(host)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", host.port), timeout=2) as sock:
                sock.settimeout(2)
                banner = sock.recv(64)
        except OSError:
            banner = b""
        if banner.startswith(b"SSH-"):
            result = subprocess.run(
                host.ssh_argv("true", connect_timeout_s=5),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if result.returncode == 0:
                return
            last = result.stderr.strip()[-300:]
        time.sleep(0.5)
    raise LabHostError(
        f"lab host {host.name}: no ssh login within the timeout ({last or 'sshd not answering'})\n"
        f"{_console_tail(host)}"
    )


def _console_tail(host: LabHost, lines: int = 12) -> str:
    try:
        text = (Path(host.state_dir) / "serial.log").read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "console:\n" + "\n".join(text.splitlines()[-lines:])


def stop(host: LabHost) -> bool:
    """Stop a lab host's QEMU by its pid (SIGTERM, then SIGKILL); True if it was running."""
    was_running = host.alive()
    if was_running:
        _terminate(host.pid, lambda: host.alive())
    shutil.rmtree(host.state_dir, ignore_errors=True)
    return was_running


def _terminate(pid: int, alive: Callable[[], bool]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not alive():
                return
            time.sleep(0.05)
    if alive():
        raise LabHostError(f"qemu pid {pid} survived SIGKILL")


def down(name: str) -> bool:
    """Stop lab host ``name``; True when one was running."""
    host = read_state(name)
    if host is None:
        shutil.rmtree(state_dir(name), ignore_errors=True)
        return False
    return stop(host)


def write_inventory(
    hosts: list[LabHost], path: Path, local_host: str | None = None, group: str = "lab"
) -> Path:
    """An Ansible inventory for these lab hosts (and this machine, as ``local_host``)."""
    members: dict[str, Any] = {}
    if local_host:
        members[local_host] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    for host in hosts:
        members[host.name] = host.inventory_vars()
    inventory = {"all": {"children": {group: {"hosts": members}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by bench labhost: the lab hosts bench booted on this machine.\n"
    path.write_text(header + "---\n" + yaml.safe_dump(inventory, sort_keys=False))
    return path
