"""Startup stage arithmetic on fixed stamps: pure functions, no engine."""

from __future__ import annotations

import pytest

from bench.metrics.startup import StageOrderError, relative_stamps, startup_stages

DOCKER_STAMPS = {
    "create": 1_000_000_000,
    "created": 1_011_000_000,
    "attached": 1_013_000_000,
    "started": 1_190_000_000,
    "ready": 1_201_500_000,
    "exited": 1_260_000_000,
    "removed": 1_300_000_000,
}


def test_docker_stages_from_stamps() -> None:
    stages = startup_stages(DOCKER_STAMPS)
    assert stages == pytest.approx(
        {
            "create_s": 0.011,
            "attach_s": 0.002,
            "start_s": 0.179,
            "to_ready_s": 0.2015,
            "ready_after_start_s": 0.0115,
            "to_exit_s": 0.26,
            "remove_s": 0.04,
        }
    )


def test_process_stages_have_no_attach() -> None:
    stamps = {
        "create": 0,
        "created": 150_000,
        "started": 450_000,
        "ready": 1_200_000,
        "exited": 1_250_000,
    }
    stages = startup_stages(stamps)
    assert "attach_s" not in stages and "remove_s" not in stages
    assert stages["to_ready_s"] == pytest.approx(0.0012)
    assert stages["start_s"] == pytest.approx(0.0003)


def test_missing_ready_gives_no_to_ready() -> None:
    stages = startup_stages({"create": 0, "created": 10, "started": 20})
    assert "to_ready_s" not in stages


def test_out_of_order_stamps_are_rejected() -> None:
    with pytest.raises(StageOrderError, match="stage ready"):
        startup_stages({"create": 0, "created": 10, "started": 30, "ready": 20})


def test_relative_stamps_keep_origin() -> None:
    rel = relative_stamps(DOCKER_STAMPS)
    assert rel["create"] == 0 and rel["ready"] == 201_500_000
    assert rel["create_abs"] == 1_000_000_000
