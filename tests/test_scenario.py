"""Scenario files: strict validation with field paths, case expansion, hashing, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import ScenarioError
from bench.scenario import (
    Scenario,
    expand_cases,
    json_schema,
    load_scenario,
    parse_scenario,
    scenario_sha256,
)
from tests.conftest import REPO

GOOD = "name: t\nbackends: [process, docker]\n"

# (yaml text, expected "field <path>" fragment, expected reason fragment)
MALFORMED = [
    ("name: t\nbackends: [docker]\nsamples: 0\n", "field samples:", "greater than or equal to 1"),
    (
        "name: t\nbackends: [dockr]\n",
        "field backends[0]:",
        "unknown backend 'dockr'; valid backends: process, docker",
    ),
    ("name: t\nbackends: [docker]\nsampels: 3\n", "field sampels:", "unknown field"),
    ("backends: [docker]\n", "field name:", "required field is missing"),
    ("name: t\n", "field backends:", "required field is missing"),
    ("name: t\nbackends: []\n", "field backends:", "at least 1"),
    (
        "name: t\nbackends: [docker]\ninstance: {memory_mib: 2}\n",
        "field instance.memory_mib:",
        "greater than or equal to 4",
    ),
    (
        "name: t\nbackends: [docker]\nmatrix: {memory_mib: [64, 1]}\n",
        "field matrix.memory_mib[1]:",
        "4",
    ),
    (
        "name: t\nbackends: [docker]\nmatrix: {colour: [1]}\n",
        "field matrix:",
        "unknown matrix parameter",
    ),
    (
        "name: t\nbackends: [docker]\nmatrix: {memory_mib: []}\n",
        "field matrix.memory_mib:",
        "at least 1",
    ),
    (
        "name: t\nbackends: [docker]\ninstance: {payload: {mode: alloc}}\n",
        "field instance.payload:",
        "needs alloc_mib",
    ),
    (
        "name: t\nbackends: [docker]\ninstance: {payload: {mode: burn, threads: 0, seconds: 1}}\n",
        "field instance.payload.threads:",
        "greater than or equal to 1",
    ),
    ("name: t\nbackends: [docker, docker]\n", "field backends:", "unique"),
    ("name: t\nbackends: [docker]\ntimeout_s: soon\n", "field timeout_s:", "valid number"),
    ("name: t\nbackends: [docker]\nstart: lukewarm\n", "field start:", "'warm' or 'cold'"),
    (
        "name: t\nbackends: [docker]\ninstance: {network: host}\n",
        "field instance.network:",
        "'none' or 'bridge'",
    ),
    (
        "name: t\nbackends: [docker]\nschema_version: 9\n",
        "field schema_version:",
        "newer than this bench",
    ),
    (
        "name: t\nbackends: [docker]\ninstance: {payload: {mode: ready, colour: red}}\n",
        "field instance.payload.colour:",
        "unknown field",
    ),
    ("- just\n- a list\n", "field (top level):", "expected a mapping"),
    ("", "field (top level):", "expected a mapping, got empty"),
]


@pytest.mark.parametrize(("text", "where", "reason"), MALFORMED)
def test_malformed_scenario_names_file_field_and_reason(text: str, where: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "scenarios/bad.yaml")
    message = str(caught.value)
    assert message.startswith("scenarios/bad.yaml: "), message
    assert where in message, message
    assert reason in message, message
    assert caught.value.exit_code == 2


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.yaml:2:1: YAML syntax error"):
        parse_scenario("name: [x\n", "bad.yaml")


def test_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")


def test_defaults_and_case_without_matrix() -> None:
    scenario = parse_scenario(GOOD)
    assert scenario.samples == 10 and scenario.warmups == 1 and scenario.start == "warm"
    assert scenario.instance.network == "none"
    cases = expand_cases(scenario)
    assert [c.name for c in cases] == ["startup"]
    assert cases[0].spec.payload.argv() == ["ready"]


def test_matrix_expands_to_readable_cases_in_order() -> None:
    scenario = parse_scenario(GOOD + "matrix: {memory_mib: [64, 128], network: [none, bridge]}\n")
    cases = expand_cases(scenario)
    assert [c.name for c in cases] == [
        "startup(memory_mib=64,network=none)",
        "startup(memory_mib=64,network=bridge)",
        "startup(memory_mib=128,network=none)",
        "startup(memory_mib=128,network=bridge)",
    ]
    assert cases[3].spec.memory_mib == 128 and cases[3].spec.network == "bridge"


def test_payload_argv_per_mode() -> None:
    scenario = parse_scenario(
        GOOD + "instance: {payload: {mode: burn, threads: 3, seconds: 1.5}}\n"
    )
    assert scenario.instance.payload.argv() == ["burn", "3", "1.5"]
    scenario = parse_scenario(GOOD + "instance: {payload: {mode: alloc, alloc_mib: 64}}\n")
    assert scenario.instance.payload.argv() == ["alloc", "64"]


def test_hash_is_canonical_and_sensitive() -> None:
    a = parse_scenario("name: t\nbackends: [process, docker]\nsamples: 5\n")
    b = parse_scenario("samples: 5\nbackends: [process, docker]\nname: t\n")
    c = parse_scenario("name: t\nbackends: [process, docker]\nsamples: 6\n")
    assert scenario_sha256(a) == scenario_sha256(b)
    assert scenario_sha256(a) != scenario_sha256(c)


def test_committed_schema_matches_models() -> None:
    committed = json.loads((REPO / "scenarios" / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run: bench schema"


def test_every_committed_scenario_is_valid() -> None:
    files = sorted((REPO / "scenarios").glob("*.yaml"))
    assert files, "no scenarios committed"
    for path in files:
        scenario, _ = load_scenario(path)
        assert expand_cases(scenario)


scenario_dicts = st.fixed_dictionaries(
    {
        "name": st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            min_size=1,
            max_size=20,
        ),
        "backends": st.lists(
            st.sampled_from(["process", "docker"]), min_size=1, max_size=2, unique=True
        ),
        "samples": st.integers(1, 1000),
        "warmups": st.integers(0, 10),
        "timeout_s": st.floats(0.1, 3600, allow_nan=False),
        "start": st.sampled_from(["warm", "cold"]),
        "matrix": st.dictionaries(
            st.sampled_from(["memory_mib", "cpus"]),
            st.lists(st.integers(4, 1024), min_size=1, max_size=3, unique=True),
            max_size=2,
        ),
    }
)


@settings(max_examples=60, deadline=None)
@given(scenario_dicts)
def test_round_trip_through_yaml_preserves_scenario_and_hash(data: dict[str, Any]) -> None:
    scenario = Scenario.model_validate(data)
    text = yaml.safe_dump(scenario.model_dump(mode="json"))
    again = parse_scenario(text)
    assert again == scenario
    assert scenario_sha256(again) == scenario_sha256(scenario)
    cases = expand_cases(again)
    expected = 1
    for values in data["matrix"].values():
        expected *= len(values)
    assert len(cases) == expected
    assert len({c.name for c in cases}) == expected
