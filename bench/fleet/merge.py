"""The merge of a campaign on the controller: what each expected host brought back, or why not.

What comes back from ``ansible/fleet.yml`` is merged here, in
``results/campaigns/<id>/``:

- ``campaign.json`` and ``summary.md``: every host the campaign expected, with its
  status (``ok``; ``partial``: the run has failed samples; ``failed``: the stage and the
  reason; ``missing``: no status at all, with the reason found in Ansible's log), the run
  it produced and the facts that matter when comparing hosts (kernel, cgroup version,
  CPU, memory);
- ``compare-host.{md,json}`` and ``compare-kernel.{md,json}``: ``bench compare
  --group-by host`` and ``--group-by kernel`` over the collected runs. Hosts whose
  must-match facts differ are *incomparable*, with the reason; with ``--ignore-key``
  the merge writes the overridden comparison too (``compare-kernel-ignoring-....md``);
- ``report.html``: one report over every collected run, whose first banners name the
  hosts that brought nothing back and why.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

STATUS_OK = ("ok", "partial")
LOG_NAME = "ansible.log"
_LOG_LINE = re.compile(
    r"^(?:[0-9.]+ s \| )?(?:fatal|failed): \[(?P<host>[^\]]+)\]: "
    r"(?P<kind>UNREACHABLE|FAILED)! => (?P<json>\{.*\})"
)


class CampaignError(BenchError):
    """A campaign could not be started or merged (says why)."""

    exit_code = 3


@dataclass
class HostOutcome:
    """What one expected host of a campaign brought back, or why it brought nothing."""

    host: str
    status: str
    stage: str | None = None
    reason: str | None = None
    run_id: str | None = None
    results: str | None = None
    run_status: str | None = None
    note: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def reasons_from_log(text: str) -> dict[str, str]:
    """The last failure Ansible printed for each host (``fatal: [h]: UNREACHABLE! => {...}``)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if not match:
            continue
        try:
            message = str(json.loads(match["json"]).get("msg", "")).strip()
        except ValueError:
            message = match["json"][:300]
        found[match["host"]] = f"{match['kind'].lower()}: {message[:500]}"
    return found


def host_outcomes(
    campaign_dir: Path, hosts: Sequence[str], log_text: str | None = None
) -> list[HostOutcome]:
    """Every expected host's outcome, from the statuses the playbook recorded."""
    statuses: dict[str, dict[str, Any]] = {}
    hosts_dir = campaign_dir / "hosts"
    if hosts_dir.is_dir():
        for path in sorted(hosts_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            statuses[str(record.get("host", path.stem))] = record
    from_log = reasons_from_log(log_text or "")
    outcomes = []
    for host in dict.fromkeys([*hosts, *statuses]):
        record = statuses.get(host)
        if record is None:
            reason = from_log.get(host)
            if reason is None and "localhost" in from_log:
                reason = (
                    "the campaign stopped on the controller before this host's turn: "
                    + from_log["localhost"]
                )
            outcomes.append(
                HostOutcome(
                    host,
                    "missing",
                    reason=reason
                    or "no status recorded: Ansible dropped the host before any stage "
                    "recorded one (see the campaign's ansible.log)",
                )
            )
            continue
        outcome = HostOutcome(
            host,
            str(record.get("status", "missing")),
            stage=record.get("stage"),
            reason=record.get("reason"),
            run_id=record.get("run_id"),
            results=record.get("results"),
            run_status=record.get("run_status"),
            note=record.get("note"),
        )
        if outcome.status in STATUS_OK and not (
            outcome.results and (Path(outcome.results) / "run.json").is_file()
        ):
            outcome.status = "failed"
            outcome.reason = f"its run was not found on the controller ({outcome.results})"
        outcomes.append(outcome)
    return outcomes


def _run_facts(run_dir: Path) -> dict[str, Any]:
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    host = run.get("host") or {}
    return {
        "hostname": host.get("hostname"),
        "kernel": (host.get("kernel") or {}).get("release"),
        "cgroup": (host.get("cgroup") or {}).get("version"),
        "cgroup_mode": (host.get("cgroup") or {}).get("mode"),
        "cpu": (host.get("cpu") or {}).get("model"),
        "cores": (host.get("cpu") or {}).get("logical_cores"),
        "memory_gib": round(((host.get("memory") or {}).get("total_bytes") or 0) / 2**30, 1),
        "init": (host.get("init") or {}).get("comm")
        if isinstance(host.get("init"), dict)
        else host.get("init"),
        "status": run.get("status"),
        "samples": (run.get("counts") or {}).get("samples"),
        "failed": (run.get("counts") or {}).get("failed"),
        "unavailable": run.get("unavailable"),
    }


def merge_campaign(
    campaign_dir: Path,
    hosts: Sequence[str],
    ignore_keys: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Merge a campaign into campaign.json, summary.md, comparisons and a report.

    See the module docstring; returns what campaign.json holds.
    """
    say = log or (lambda _text: None)
    log_path = campaign_dir / LOG_NAME
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else None
    outcomes = host_outcomes(campaign_dir, hosts, log_text)
    runs = [Path(o.results) for o in outcomes if o.status in STATUS_OK and o.results]
    for outcome in outcomes:
        if outcome.status in STATUS_OK and outcome.results:
            outcome.facts = _run_facts(Path(outcome.results))
    missing = [o for o in outcomes if o.status not in STATUS_OK]
    comparisons: dict[str, Any] = {}
    report: dict[str, Any] = {}
    if runs:
        comparisons, report = _analyse(campaign_dir, runs, missing, ignore_keys, say)
    summary: dict[str, Any] = {
        "schema_version": 1,
        "campaign_id": campaign_dir.name,
        "merged_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hosts": [asdict(o) for o in outcomes],
        "collected": [str(r) for r in runs],
        "missing": {o.host: f"{o.status} ({o.stage or 'no stage'}): {o.reason}" for o in missing},
        "comparisons": comparisons,
        "report": report,
    }
    (campaign_dir / "campaign.json").write_text(json.dumps(summary, indent=2) + "\n")
    (campaign_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


def _missing_lines(missing: Sequence[HostOutcome]) -> list[str]:
    return [
        f"host {o.host}: no results ({o.status}"
        + (f" at {o.stage}" if o.stage else "")
        + f"): {o.reason}"
        for o in missing
    ]


def _analyse(
    campaign_dir: Path,
    runs: list[Path],
    missing: Sequence[HostOutcome],
    ignore_keys: Sequence[str],
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.analysis.compare import (
        compare_dataset,
        format_json,
        format_markdown,
        row_title,
    )
    from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset

    dataset = load_dataset(runs, labels=ANALYSIS_LABELS)
    header = "".join(f"> **{line}**\n" for line in _missing_lines(missing))
    comparisons: dict[str, Any] = {}
    variants: list[tuple[str, str, tuple[str, ...]]] = [
        ("host", "host", ()),
        ("kernel", "kernel", ()),
    ]
    if ignore_keys:
        suffix = "-ignoring-" + "-".join(re.sub(r"[^A-Za-z0-9]+", "_", k) for k in ignore_keys)
        variants += [
            (f"host{suffix}", "host", tuple(ignore_keys)),
            (f"kernel{suffix}", "kernel", tuple(ignore_keys)),
        ]
    for name, group_by, ignored in variants:
        entry: dict[str, Any] = {"group_by": group_by, "ignore_keys": list(ignored)}
        try:
            compared = compare_dataset(dataset, group_by, ignore_keys=ignored)
        except BenchError as exc:
            entry["error"] = str(exc)
            comparisons[name] = entry
            say(f"compare --group-by {group_by}: {exc}")
            continue
        markdown = campaign_dir / f"compare-{name}.md"
        as_json = campaign_dir / f"compare-{name}.json"
        markdown.write_text(header + ("\n" if header else "") + format_markdown(compared))
        as_json.write_text(format_json(compared))
        entry.update(
            markdown=markdown.name,
            json=as_json.name,
            groups=[g.label for g in compared.groups],
            incomparable=compared.incomparable,
            rows=len(compared.rows),
            verdicts={f"{row_title(row)} [{row.contender}]": row.verdict for row in compared.rows},
        )
        comparisons[name] = entry
    report = _write_report(campaign_dir, dataset, missing, say)
    return comparisons, report


def _write_report(
    campaign_dir: Path, dataset: Any, missing: Sequence[HostOutcome], say: Callable[[str], None]
) -> dict[str, Any]:
    from bench.report.build import Note, build_report
    from bench.report.render import render_html, write_html

    target = campaign_dir / "report.html"
    try:
        model = build_report(dataset, title=f"campaign {campaign_dir.name}", compare_by="kernel")
        model.banners[:0] = [Note(line, level="alert") for line in _missing_lines(missing)]
        size = write_html(target, render_html(model))
    except Exception as exc:  # a report must never lose the merge
        say(f"report not written: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"path": target.name, "size_bytes": size, "runs": len(dataset.runs)}


def _cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value).replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The campaign's summary for people: hosts, what is missing and why, comparisons."""
    lines = [f"# Campaign {summary['campaign_id']}", ""]
    columns = ["host", "status", "stage", "run", "kernel", "cgroup", "cpu", "cores", "note"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for host in summary["hosts"]:
        facts = host.get("facts") or {}
        cgroup = f"v{facts['cgroup']} ({facts.get('cgroup_mode')})" if facts.get("cgroup") else None
        cells = [
            host["host"],
            host["status"],
            host.get("stage"),
            host.get("run_id"),
            facts.get("kernel"),
            cgroup,
            facts.get("cpu"),
            facts.get("cores"),
            host.get("note"),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if summary["missing"]:
        lines += ["", "## Hosts without results", ""]
        lines += [f"- **{host}**: {_cell(why)}" for host, why in summary["missing"].items()]
    lines += ["", "## Comparisons", ""]
    for entry in summary["comparisons"].values():
        title = f"`bench compare --group-by {entry['group_by']}`" + (
            "".join(f" --ignore-key {k}" for k in entry.get("ignore_keys", []))
        )
        if "error" in entry:
            lines.append(f"- {title}: {_cell(entry['error'])}")
            continue
        verdict = (
            "incomparable: "
            + "; ".join(f"{g}: {', '.join(r)}" for g, r in entry["incomparable"].items())
            if entry["incomparable"]
            else f"{entry['rows']} rows"
        )
        lines.append(f"- {title}: [{entry['markdown']}]({entry['markdown']}) ({verdict})")
    if not summary["comparisons"]:
        lines.append("- none: no host brought a run back")
    report = summary.get("report") or {}
    if report.get("path"):
        lines += ["", f"Report over every collected run: [{report['path']}]({report['path']})"]
    elif report.get("error"):
        lines += ["", f"Report not written: {_cell(report['error'])}"]
    return "\n".join(lines) + "\n"


# -- running a campaign through Ansible --------------------------------------------------
