"""The memory ledger, the MemAvailable slope and host settings, on fixed inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.host_settings import changed_settings, read_setting, restore_abandoned
from bench.metrics.ledger import Ledger, cgroup_memory_parts
from bench.metrics.procmem import MIB, guest_ram_and_jit, parse_smaps_mappings
from bench.metrics.slope import difference, fit_slope, t975

QEMU_SMAPS = """\
55d0c0000000-55d0c1400000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
Size:              20480 kB
Rss:               12000 kB
Pss:               12000 kB
7fc253e00000-7fc25be00000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               83968 kB
Pss:               83968 kB
Anonymous:         83968 kB
7fc25c000000-7fc29bfff000 rwxp 00000000 00:00 0
Size:            1048572 kB
Rss:               38912 kB
Pss:               38912 kB
7fff00000000-7fff00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Rss:                  40 kB
Pss:                  40 kB
"""


def test_guest_ram_is_the_anonymous_mapping_of_its_size_and_jit_is_anonymous_executable() -> None:
    mappings = parse_smaps_mappings(QEMU_SMAPS)
    assert len(mappings) == 4 and mappings[1].size == 128 * MIB
    found = guest_ram_and_jit(mappings, 128 * MIB)
    assert found["guest_ram_rss"] == 83968 * 1024
    assert found["jit_pss"] == 38912 * 1024
    assert guest_ram_and_jit(mappings, 256 * MIB)["guest_ram_rss"] is None


def test_cgroup_parts_v1_and_v2() -> None:
    v1 = cgroup_memory_parts({"total_cache": 10 * MIB, "total_mapped_file": 4 * MIB}, 1)
    assert v1 == {"unmapped_page_cache": 6 * MIB, "kernel_slab": None}
    v2 = cgroup_memory_parts({"file": 3 * MIB, "file_mapped": MIB, "slab": 2 * MIB}, 2)
    assert v2 == {"unmapped_page_cache": 2 * MIB, "kernel_slab": 2 * MIB}
    assert cgroup_memory_parts({}, 2)["unmapped_page_cache"] is None


def test_ledger_total_adds_only_additive_parts() -> None:
    ledger = Ledger(
        parts={
            "pss_anon:qemu": 100,
            "pss_file:qemu": 50,
            "page_tables": 5,
            "unmapped_page_cache": 7,
            "kernel_slab": None,
            "guest_ram_touched": 80,  # inside pss_anon: never added twice
            "jit_code": 30,
            "ksm_merged": 9,
        }
    )
    assert ledger.total_bytes() == 162
    ledger.complete = False
    assert ledger.total_bytes() is None


def test_slope_recovers_a_known_cost_per_instance_with_drift_between_rounds() -> None:
    # MemAvailable falls 140 MiB per guest; each round starts from another level
    rounds = [
        [
            (n, 20000 - 140 * n + noise)
            for n, noise in zip(range(9), [0, 3, -2, 1, -4, 2, 0, -1, 3], strict=True)
        ],
        [
            (n, 18500 - 140 * n + noise)
            for n, noise in zip(range(9), [1, -3, 2, 0, 2, -2, 1, 0, -1], strict=True)
        ],
    ]
    fit = fit_slope(rounds)
    assert fit is not None
    assert fit.slope == pytest.approx(-140, abs=1)
    assert fit.ci_low is not None and fit.ci_high is not None
    assert fit.ci_low < -140 < fit.ci_high and fit.excludes_zero()
    # the same rounds without per-round intercepts would smear the levels into the slope
    assert fit.df == 18 - 2 - 1


def test_a_cost_that_is_not_there_is_not_distinguishable_from_zero() -> None:
    flat = [[(n, 1000 + (3 if n % 2 else -3)) for n in range(8)]]
    native = [[(n, 900 + (2 if n % 3 else -2)) for n in range(8)]]
    a, b = fit_slope(flat), fit_slope(native)
    assert a is not None and b is not None
    delta, low, high = difference(b, a)
    assert abs(delta) < 3
    assert low is not None and high is not None and low < 0 < high
    assert fit_slope([[(0, 1.0), (1, 2.0)]]) is None, "two points make no interval"


def test_a_cost_below_zero_is_drift_never_memory_given_back() -> None:
    from bench.metrics.memory_derived import cost_finding

    assert cost_finding(-0.03, -0.04, -0.03).startswith("below 0: the host's drift")
    assert cost_finding(0.4, -0.2, 1.0) == "not distinguishable from 0"
    assert cost_finding(2.7, 0.2, 5.3) == "+2.7 MiB per instance [+0.2, +5.3]"
    assert "no interval" in cost_finding(2.7, None, None)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200))
def test_t_quantiles_fall_towards_the_normal(df: int) -> None:
    assert 1.95 < t975(df) <= 12.71
    assert t975(df) >= t975(df + 1)


def test_changed_settings_are_given_back_also_on_error(tmp_path: Path) -> None:
    knob = tmp_path / "run"
    thp = tmp_path / "enabled"
    knob.write_text("0\n")
    thp.write_text("always [madvise] never\n")
    saved = tmp_path / "saved"
    with pytest.raises(RuntimeError), changed_settings({knob: "1"}, "r1", saved) as before:
        assert before == {str(knob): "0"}
        assert knob.read_text() == "1" and (saved / "r1.json").is_file()
        raise RuntimeError("interrupted")
    assert knob.read_text() == "0" and not (saved / "r1.json").exists()
    assert read_setting(thp) == "madvise"


def test_settings_of_a_killed_run_are_restored_by_clean(tmp_path: Path) -> None:
    knob = tmp_path / "run"
    knob.write_text("1")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dead.json").write_text(f'{{"pid": 999999999, "restore": {{"{knob}": "0"}}}}')
    assert restore_abandoned(saved) == [f"{knob}=0"]
    assert knob.read_text() == "0" and not list(saved.iterdir())


def test_an_up_and_down_ramp_separates_the_cost_from_the_hosts_drift() -> None:
    from bench.metrics.slope import fit_slope_with_drift

    # 8 instances up then down, one step every 2 s; each costs 140 MiB; meanwhile the host
    # frees 6 MiB/s (page cache refilling elsewhere): an up-only slope would say -128
    ns = list(range(9)) + list(range(7, -1, -1))
    wiggle = [1, -2, 0, 2, -1, 1, 0, -2, 1, 2, -1, 0, 1, -2, 0, 1, -1]
    points = [
        (n, 2.0 * i, 20000 - 140 * n + 6 * 2.0 * i + w)
        for i, (n, w) in enumerate(zip(ns, wiggle, strict=True))
    ]
    fit = fit_slope_with_drift([points])
    assert fit is not None and fit.ci_low is not None and fit.ci_high is not None
    assert fit.slope == pytest.approx(-140, abs=1.5)
    assert fit.ci_low < -140 < fit.ci_high
    up_only = fit_slope([[(n, y) for n, _t, y in points[:9]]])
    assert up_only is not None and abs(up_only.slope + 140) > 10, "drift biases an up-only fit"
    # up only, time and N move together: the drift cannot be told apart, no answer
    assert fit_slope_with_drift([[(n, float(n), 1.0 * n) for n in range(9)]]) is None


def test_groups_that_disagree_give_no_finding() -> None:
    from bench.metrics.slope import SlopeFit, across_groups

    agree = across_groups(
        [
            SlopeFit(-140, 2, None, None, 17, 14),
            SlopeFit(-142, 2, None, None, 17, 14),
            SlopeFit(-139, 2, None, None, 17, 14),
        ]
    )
    assert agree is not None and agree.excludes_zero()
    disagree = across_groups(
        [SlopeFit(-120, 2, None, None, 17, 14), SlopeFit(36, 2, None, None, 17, 14)]
    )
    assert disagree is not None and not disagree.excludes_zero(), "tight groups that disagree"
    one = across_groups([SlopeFit(-140, 2, -144, -136, 17, 14)])
    assert one is not None and one.ci_low is None, "one group: no interval"
