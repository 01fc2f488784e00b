"""A campaign over a fleet: ``ansible-playbook ansible/fleet.yml`` with a campaign id.

Ansible runs the hosts (``run_campaign`` only builds its command line, passes the
campaign id and keeps its log); bench never talks to a lab host itself. What comes back
is merged on the controller by ``bench.fleet.merge``. ``publish_campaign`` is the one
place where a campaign calls ``bench publish``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.files import read_text_bounded
from bench.fleet.merge import LOG_NAME, CampaignError, merge_campaign
from bench.scenario import MAX_SCENARIO_BYTES

if TYPE_CHECKING:
    from bench.report.site import PublishOutcome


def new_campaign_id(scenario_name: str) -> str:
    """A sortable campaign id: ``20261201T093000Z-fleet-quick``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '-', scenario_name)}"


def ansible_playbook() -> Path:
    """The ansible-playbook of bench's environment (the ``provision`` extra)."""
    found = Path(sys.executable).parent / "ansible-playbook"
    if not found.is_file():
        raise CampaignError(
            f"ansible-playbook not found next to {sys.executable}: run ansible/up.sh"
        )
    return found


def playbook_argv(
    inventory: Path,
    extra_vars: dict[str, Any],
    tags: Sequence[str] = (),
    limit: str | None = None,
) -> list[str]:
    """The ansible-playbook command of a campaign (extra vars as one JSON argument)."""
    from bench.fleet.labhost_recipe import ansible_dir

    argv = [
        str(ansible_playbook()),
        "-i",
        str(inventory),
        str(ansible_dir() / "fleet.yml"),
        "-e",
        json.dumps(extra_vars, sort_keys=True),
    ]
    if tags:
        argv += ["--tags", ",".join(tags)]
    if limit:
        argv += ["--limit", f"{limit},localhost"]
    return argv


def ansible_env() -> dict[str, str]:
    """Environment of ansible-playbook: the repository's ansible.cfg, bench's venv first."""
    from bench.fleet.labhost_recipe import ansible_dir

    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(ansible_dir() / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class CampaignRun:
    """A finished campaign: its directory, ansible-playbook's exit code, the merge."""

    campaign_id: str
    directory: Path
    playbook_rc: int
    wall_s: float
    summary: dict[str, Any]


def run_campaign(
    inventory: Path,
    scenario: Path,
    results: Path,
    *,
    campaign_id: str | None = None,
    tags: Sequence[str] = (),
    limit: str | None = None,
    serial: str | None = None,
    run_args: Sequence[str] = (),
    ignore_keys: Sequence[str] = (),
    hosts_group: str = "lab",
    echo: Callable[[str], None] | None = None,
) -> CampaignRun:
    """Run ``ansible/fleet.yml`` over ``inventory`` and return the merged campaign.

    ansible-playbook's output goes to ``echo`` line by line and to the campaign's
    ``ansible.log`` (each line prefixed with the seconds since the start). The playbook
    merges at its end; if it never got there (an error Ansible could not survive), the
    merge runs here, so a campaign always ends merged.
    """
    import yaml

    if not scenario.exists():
        raise CampaignError(f"{scenario}: no such scenario file")
    text = read_text_bounded(scenario, MAX_SCENARIO_BYTES, CampaignError, "scenario")
    name = str((yaml.safe_load(text) or {}).get("name", scenario.stem))
    campaign = campaign_id or new_campaign_id(name)
    results = results.resolve()
    directory = results / "campaigns" / campaign
    directory.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {
        "bench_fleet_scenario": str(scenario.resolve()),
        "bench_fleet_campaign_id": campaign,
        "bench_fleet_results": str(results),
        "bench_fleet_hosts": hosts_group,
        "bench_fleet_controller_bench": str(Path(sys.executable).parent / "bench"),
        "bench_fleet_run_args": list(run_args),
        "bench_fleet_ignore_keys": list(ignore_keys),
    }
    if serial is not None:
        extra["bench_fleet_run_serial"] = serial
    argv = playbook_argv(inventory, extra, tags, limit)
    started = time.monotonic()
    with open(directory / LOG_NAME, "a") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ansible_env(),
            stdin=subprocess.DEVNULL,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                # seconds since the start on every line: where a campaign's time goes
                log.write(f"{time.monotonic() - started:7.1f} s | {line}")
                log.flush()
                if echo is not None:
                    echo(line.rstrip("\n"))
            rc = process.wait()
    wall_s = time.monotonic() - started
    summary_path = directory / "campaign.json"
    merged = summary_path.is_file() and summary_path.stat().st_mtime >= time.time() - wall_s - 1
    if merged:
        summary = json.loads(summary_path.read_text())
    else:
        expected = inventory_hosts(inventory, hosts_group)
        summary = merge_campaign(directory, expected, ignore_keys)
    return CampaignRun(campaign, directory, rc, wall_s, summary)


def inventory_hosts(inventory: Path, group: str = "lab") -> list[str]:
    """The hosts of ``group`` in a YAML inventory (for a merge outside the playbook)."""
    import yaml

    try:
        text = read_text_bounded(inventory, MAX_SCENARIO_BYTES, CampaignError, "inventory")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CampaignError(f"{inventory}: cannot read the inventory ({exc})") from None
    found: list[str] = []

    def walk(node: Any, inside: bool) -> None:
        if not isinstance(node, dict):
            return
        for name, child in node.items():
            if name == "hosts" and inside and isinstance(child, dict):
                found.extend(str(h) for h in child)
            elif name == "children" and isinstance(child, dict):
                for group_name, group_node in child.items():
                    walk(group_node, inside or group_name == group)
            elif isinstance(child, dict) and name not in ("vars",):
                walk(child, inside or name == group)

    walk(data, False)
    return list(dict.fromkeys(found))


# -- publishing -----------------------------------------------------------------------


def default_site(results: Path) -> Path:
    """Where a campaign's site goes unless told: ``reports/site`` beside the results root.

    Never inside the results root: a site holds copies of each run's ``run.json``, which
    the next publish (or compare) of that root would read as runs.
    """
    return results.resolve().parent / "reports" / "site"


def publish_campaign(
    campaign_dir: Path,
    results: Path,
    site: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> PublishOutcome:
    """THE place where a campaign publishes: a site over every collected run.

    Publishes the whole results root (every host's runs, this campaign's and earlier
    ones: the trend and kernel pages need the history) into ``site`` (default
    ``default_site``), incrementally, as ``bench publish`` does.
    """
    from bench.report.site import publish_site

    if not (campaign_dir / "campaign.json").is_file():
        raise CampaignError(f"{campaign_dir}: not a merged campaign (no campaign.json)")
    target = site if site is not None else default_site(results)
    if target.resolve().is_relative_to(results.resolve()):
        raise CampaignError(
            f"site {target}: inside the results root {results}; its copies of run.json "
            "would be read as runs: choose a directory outside it"
        )
    return publish_site([results], target, progress=progress)
