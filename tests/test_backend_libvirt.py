"""The libvirt backend against the real daemon and QEMU (TCG here): stages, timeout, accel."""

from __future__ import annotations

import os
import time

import pytest

from bench.backends.base import Backend
from bench.backends.libvirt import LibvirtBackend
from bench.errors import InstanceTimeout
from bench.metrics.startup import STAGE_ORDER
from bench.scenario import InstanceSpec
from tests.support import startup_series

pytestmark = [pytest.mark.libvirt, pytest.mark.usefixtures("no_leftovers")]

VM_STAGES = {
    "create",
    "created",
    "started",
    "first_console_byte",
    "userspace",
    "ready",
    "exited",
    "removed",
    "gone",
}


def test_startup_series_has_every_stage_in_order_and_says_tcg(libvirt_backend: Backend) -> None:
    samples, ctx = startup_series(
        libvirt_backend,
        "name: t\nbackends: [libvirt]\nsamples: 2\nwarmups: 0\ninstance: {accel: tcg}\n",
        "run-000003",
    )
    assert not ctx.registry.names()
    for sample in samples:
        assert sample.ok, sample.error
        assert set(sample.t_ns) >= VM_STAGES, sample.t_ns
        stamps = [sample.t_ns[name] for name in STAGE_ORDER if name in sample.t_ns]
        assert stamps == sorted(stamps)
        assert sample.labels["accel"] == "tcg"
        assert sample.labels["machine"] == "pc"
        assert sample.labels["guest_kernel"]
        assert sample.labels["exit_code"] == 0
        assert (
            0
            < sample.stages["to_userspace_s"]
            <= sample.stages["to_ready_s"]
            < sample.stages["to_exit_s"]
        )
        # the guest's own clock is recorded, but only as a label
        assert 0 < sample.labels["guest_uptime_at_userspace_s"] < 60


def test_guest_that_never_prints_the_marker_is_killed_at_its_timeout() -> None:
    # no init in the initramfs and panic=0: the guest kernel panics and hangs forever
    backend = LibvirtBackend(extra_cmdline=["rdinit=/nonexistent", "init=/nonexistent", "panic=0"])
    try:
        backend.check_available()
    except Exception as exc:  # same rule as the fixtures
        from tests.conftest import skip_or_fail

        skip_or_fail(str(exc))
    instance = backend.start(InstanceSpec(accel="tcg"), "bench-test-vm-hang", "test-run-000003")
    pid = backend.host_pids(instance)[0]
    try:
        started = time.monotonic()
        with pytest.raises(InstanceTimeout, match="no READY line before the timeout"):
            backend.wait_ready(instance, 6)
        assert 5.5 < time.monotonic() - started < 30
        assert "userspace" not in instance.t_ns
    finally:
        backend.stop(instance)
        backend.wait_gone(instance)
        backend.close()
    assert "destroyed" in instance.t_ns, "a hung guest must be destroyed, not left running"
    assert not os.path.exists(f"/proc/{pid}/exe") or not os.readlink(f"/proc/{pid}/exe")
    assert "bench-test-vm-hang" not in LibvirtBackend().leftovers()


def test_accel_auto_is_decided_by_a_real_boot(libvirt_backend: LibvirtBackend) -> None:
    decision = libvirt_backend.accel_decision("auto")
    assert decision.accel in {"kvm", "tcg"}
    assert decision.reason
    if decision.accel == "tcg" and os.path.exists("/dev/kvm"):
        # this host: /dev/kvm exists and still guests do not boot under it
        assert (
            "did not reach userspace" in decision.reason
            or "failed" in decision.reason
            or ("could not start" in decision.reason)
        )
    assert libvirt_backend.accel_decision("tcg").accel == "tcg"
