"""Domain XML generation on fixed inputs, against a captured expectation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.backends.libvirt_xml import DomainConfig, domain_xml, is_bench_domain_xml
from tests.conftest import DATA

CONFIG = DomainConfig(
    name="bench-a1b2c3-7",
    run_id="20261130T000000Z-quick-a1b2c3",
    domain_type="qemu",
    memory_mib=128,
    vcpus=1,
    kernel=Path("/cache/guest/kernel/vmlinux"),
    initrd=Path("/cache/guest/initramfs-abc.cpio"),
    cmdline="console=ttyS0 panic=-1 quiet tsc_early_khz=2300000 -- ready",
    console_log=Path("/run/bench/libvirt/bench-a1b2c3-7.log"),
)


def _element(root: ET.Element, path: str) -> ET.Element:
    """The element at ``path``; a missing one fails the test."""
    element = root.find(path)
    assert element is not None, f"no <{path}>"
    return element


def test_tcg_domain_matches_captured_expectation() -> None:
    expected = (DATA / "libvirt" / "domain_tcg.xml").read_text()
    assert domain_xml(CONFIG) == expected


def test_domain_has_what_this_host_needs() -> None:
    root = ET.fromstring(domain_xml(CONFIG))
    assert root.get("type") == "qemu"
    assert root.findtext("os/type") == "hvm" and _element(root, "os/type").get("machine") == "pc"
    assert root.find("features/acpi") is not None, "ACPI is how a guest poweroff ends the domain"
    assert _element(root, "devices/memballoon").get("model") == "none"
    assert root.find("devices/interface") is None, "no network unless asked"
    assert _element(root, "devices/serial/source").get("path") == str(CONFIG.console_log)
    assert root.findtext("on_poweroff") == "destroy"
    assert root.find("memtune") is None, "hard_limit at create fails here: applied live instead"
    assert root.find("cpu") is None, "never -cpu host"
    assert root.findtext("memory") == "128" and _element(root, "memory").get("unit") == "MiB"
    assert is_bench_domain_xml(domain_xml(CONFIG))


def test_kvm_type_and_sizes() -> None:
    from dataclasses import replace

    root = ET.fromstring(domain_xml(replace(CONFIG, domain_type="kvm", memory_mib=512, vcpus=2)))
    assert root.get("type") == "kvm"
    assert root.findtext("vcpu") == "2" and root.findtext("memory") == "512"


def test_cmdline_and_names_are_escaped() -> None:
    from dataclasses import replace

    text = domain_xml(replace(CONFIG, cmdline="a=<b> & c", name="bench-x"))
    assert "a=&lt;b&gt; &amp; c" in text
    assert ET.fromstring(text).findtext("os/cmdline") == "a=<b> & c"


def test_unknown_domain_type_is_refused() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="qemu or kvm"):
        domain_xml(replace(CONFIG, domain_type="xen"))
