"""Commands for many hosts: ``bench fleet ...`` (Ansible runs the hosts) and ``bench labhost ...``.

``bench fleet run INVENTORY SCENARIO`` runs ``ansible/fleet.yml`` (provision, install,
run, collect, merge) and prints the merged campaign; ``prepare``, ``merge`` and
``publish`` are the controller's steps the playbook calls. ``bench labhost up`` boots a
second lab host with another kernel on this machine (a cached Debian guest under QEMU,
sshd on a loopback port) and writes an inventory for it; ``down`` stops it by its pid.
Heavy modules are imported inside the commands: ``bench run`` never loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from bench.errors import BenchError

fleet_app = typer.Typer(
    name="fleet",
    help="Run a scenario on many lab hosts through Ansible and merge what comes back.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
labhost_app = typer.Typer(
    name="labhost",
    help="A second lab host with another kernel, booted on this machine under QEMU.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer, console: Console, err_console: Console) -> None:
    """Add ``bench fleet`` and ``bench labhost`` to bench's typer app."""
    _Consoles.out = console
    _Consoles.err = err_console
    app.add_typer(fleet_app)
    app.add_typer(labhost_app)


class _Consoles:
    out: Console = Console()
    err: Console = Console(stderr=True)


def _say(text: str) -> None:
    _Consoles.err.print(Text(text, style="dim"), highlight=False)


def _fail(exc: BenchError) -> typer.Exit:
    _Consoles.err.print(
        Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True
    )
    return typer.Exit(exc.exit_code)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _campaign_exit(summary: dict[str, Any]) -> int:
    """0 when every expected host brought a complete run back, else 1."""
    return 0 if all(h["status"] == "ok" for h in summary["hosts"]) else 1


# -- bench fleet ------------------------------------------------------------------------


@fleet_app.command("run")
def fleet_run(
    inventory: Annotated[Path, typer.Argument(help="Ansible inventory (hosts in group 'lab').")],
    scenario: Annotated[Path, typer.Argument(help="The scenario every host runs.")],
    results: Annotated[
        Path, typer.Option("--results", help="Results root on this controller.")
    ] = Path("results"),
    campaign_id: Annotated[
        str | None, typer.Option("--campaign-id", help="Default: <UTC time>-<scenario name>.")
    ] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tags", help="Only these stages: provision, install, run, collect."),
    ] = None,
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts.")] = None,
    group: Annotated[str, typer.Option("--group", help="The inventory group that measures.")] = (
        "lab"
    ),
    serial: Annotated[
        str | None,
        typer.Option(
            "--serial",
            help="How many hosts measure at once (1 when they share hardware, e.g. guests "
            "of one machine). Default: all.",
        ),
    ] = None,
    run_arg: Annotated[
        list[str] | None,
        typer.Option("--run-arg", help="Extra `bench run` argument (repeatable)."),
    ] = None,
    ignore_key: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-key",
            help="Must-match host key the merged comparisons may also be made without "
            "(repeatable; the strict comparison is written too).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Provision, install, run SCENARIO on every host, collect and merge (ansible/fleet.yml)."""
    from bench.fleet.campaign import run_campaign

    try:
        outcome = run_campaign(
            inventory,
            scenario,
            results,
            campaign_id=campaign_id,
            tags=tags or (),
            limit=limit,
            serial=serial,
            run_args=run_arg or (),
            ignore_keys=ignore_key or (),
            hosts_group=group,
            echo=None
            if as_json
            else lambda line: _Consoles.out.print(line, markup=False, emoji=False),
        )
    except BenchError as exc:
        raise _fail(exc) from None
    if as_json:
        _echo_json(
            {
                "campaign_id": outcome.campaign_id,
                "directory": str(outcome.directory),
                "playbook_rc": outcome.playbook_rc,
                "wall_s": round(outcome.wall_s, 1),
                "summary": outcome.summary,
            }
        )
    else:
        _Consoles.out.print(
            (outcome.directory / "summary.md").read_text()
            + f"\ncampaign {outcome.campaign_id}: {outcome.directory} "
            f"(ansible-playbook exit {outcome.playbook_rc}, {outcome.wall_s:.0f} s)",
            markup=False,
            emoji=False,
        )
    raise typer.Exit(_campaign_exit(outcome.summary))


@fleet_app.command("prepare")
def fleet_prepare(
    output: Annotated[Path, typer.Option("--output", help="The bundle directory.")],
    no_image: Annotated[
        bool, typer.Option("--no-image", help="Do not ship the probe image.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build what every host gets (wheelhouse, probe, helper, image), cached by content."""
    from bench.fleet.shipping import build_bundle

    before = (output / "bundle.json").read_text() if (output / "bundle.json").is_file() else ""
    try:
        bundle = build_bundle(output, with_image=not no_image)
    except BenchError as exc:
        raise _fail(exc) from None
    changed = (output / "bundle.json").read_text() != before
    if as_json:
        _echo_json({"changed": changed, "directory": str(output), **bundle.description})
    else:
        description = bundle.description
        _Consoles.out.print(
            f"bundle {output}: {description['wheelhouse']} ({len(description['requirements'])} "
            f"dependencies + {description['bench_wheel']}), "
            f"probe {description['probe_sha256'][:12]}, "
            f"cgexec {description['cgexec_sha256'][:12]}, image "
            f"{(description['image'] or {}).get('tag', 'not shipped')}"
            + ("" if changed else " (unchanged)"),
            markup=False,
            emoji=False,
        )


@fleet_app.command("merge")
def fleet_merge(
    campaign_dir: Annotated[Path, typer.Argument(help="results/campaigns/<campaign id>.")],
    hosts: Annotated[
        str, typer.Option("--hosts", help="Comma-separated hosts the campaign expected.")
    ],
    results: Annotated[
        Path, typer.Option("--results", help="Results root (unused; for symmetry).")
    ] = Path("results"),
    ignore_key: Annotated[
        list[str] | None,
        typer.Option("--ignore-key", help="Also compare without this must-match key."),
    ] = None,
) -> None:
    """Merge a campaign: host statuses, compare by host and kernel, one report."""
    from bench.fleet.merge import merge_campaign

    del results
    try:
        summary = merge_campaign(
            campaign_dir,
            [h for h in hosts.split(",") if h],
            ignore_key or (),
            log=_say,
        )
    except BenchError as exc:
        raise _fail(exc) from None
    _Consoles.out.print((campaign_dir / "summary.md").read_text(), markup=False, emoji=False)
    raise typer.Exit(_campaign_exit(summary))


@fleet_app.command("publish")
def fleet_publish(
    campaign_dir: Annotated[Path, typer.Argument(help="results/campaigns/<campaign id>.")],
    results: Annotated[Path, typer.Option("--results", help="Results root.")] = Path("results"),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Site directory (default: reports/site beside the results)."
        ),
    ] = None,
) -> None:
    """Publish every collected run with ``bench publish`` (index, runs, trends, kernels)."""
    from bench.fleet.campaign import publish_campaign

    try:
        outcome = publish_campaign(campaign_dir, results, output, progress=_say)
    except BenchError as exc:
        raise _fail(exc) from None
    for warning in outcome.warnings:
        _Consoles.err.print(Text(f"warning: {warning}"), highlight=False)
    _Consoles.out.print(outcome.summary(), markup=False, emoji=False)


# -- bench labhost ----------------------------------------------------------------------


@labhost_app.command("build")
def labhost_build(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even if cached.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build (or find) the lab host image: Debian bookworm, its own kernel, systemd."""
    from bench.fleet.labhost_image import build_labhost

    try:
        image = build_labhost(rebuild=rebuild, log=_say)
    except BenchError as exc:
        raise _fail(exc) from None
    if as_json:
        _echo_json({"directory": str(image.directory), **image.manifest})
        return
    manifest = image.manifest
    _Consoles.out.print(
        f"lab host image {image.directory}: kernel {manifest['kernel_release']}, "
        f"rootfs {manifest['rootfs_bytes'] / 2**20:.0f} MiB, "
        f"disk {manifest['disk_size_bytes'] / 2**30:.0f} GiB "
        f"({manifest['disk_allocated_bytes'] / 2**20:.0f} MiB allocated), built in "
        f"{manifest['timings_s']['total_s']:.0f} s on {manifest['built_at_utc']}",
        markup=False,
        emoji=False,
    )


@labhost_app.command("up")
def labhost_up(
    names: Annotated[list[str] | None, typer.Argument(help="Lab host names (default lab1).")] = (
        None
    ),
    memory_mib: Annotated[int, typer.Option("--memory-mib", min=512)] = 2048,
    cpus: Annotated[int, typer.Option("--cpus", min=1)] = 2,
    accel: Annotated[
        str, typer.Option("--accel", help="auto (KVM only where a KVM boot works), kvm, tcg.")
    ] = "auto",
    inventory: Annotated[
        Path | None, typer.Option("--inventory", help="Write an Ansible inventory here.")
    ] = None,
    with_local: Annotated[
        str | None,
        typer.Option("--with-local", help="Also put this machine in the inventory, as NAME."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Boot lab hosts (building the image once) and wait until each accepts ssh.

    They are yours: ``bench labhost down`` (or ``bench clean --all``) stops them.
    """
    from dataclasses import asdict

    from bench.fleet.labhost import up, write_inventory

    if accel not in ("auto", "kvm", "tcg"):
        raise _fail(BenchError(f"--accel {accel!r}: use auto, kvm or tcg"))
    try:
        hosts = [
            up(name, memory_mib=memory_mib, cpus=cpus, accel=accel, log=_say, kept=True)
            for name in (names or ["lab1"])
        ]
        written = write_inventory(hosts, inventory, with_local) if inventory else None
    except BenchError as exc:
        raise _fail(exc) from None
    if as_json:
        _echo_json({"hosts": [asdict(h) for h in hosts], "inventory": str(written or "")})
        return
    for host in hosts:
        _Consoles.out.print(
            f"{host.name}: pid {host.pid}, ssh {' '.join(host.ssh_argv())}, "
            f"kernel {host.kernel_release}, {host.accel.upper()} ({host.accel_reason}), "
            f"ssh after {host.boot_to_ssh_s:.1f} s",
            markup=False,
            emoji=False,
        )
    if written:
        _Consoles.out.print(f"inventory: {written}", markup=False, emoji=False)


@labhost_app.command("down")
def labhost_down(
    names: Annotated[list[str] | None, typer.Argument(help="Lab hosts to stop.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Stop every lab host.")] = False,
) -> None:
    """Stop lab hosts by their QEMU's pid (nothing of a boot survives it)."""
    from bench.fleet.labhost import down
    from bench.fleet.labhost_cleanup import remove_all

    try:
        if everything or not names:
            stopped = remove_all()
        else:
            stopped = [name for name in names if down(name)]
    except BenchError as exc:
        raise _fail(exc) from None
    _Consoles.out.print(
        f"stopped {len(stopped)}: {', '.join(stopped) or '-'}", markup=False, emoji=False
    )


@labhost_app.command("ls")
def labhost_ls(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the lab hosts bench started that run now."""
    from dataclasses import asdict

    from bench.fleet.labhost import running_labhosts

    hosts = running_labhosts()
    if as_json:
        _echo_json([asdict(h) for h in hosts])
        return
    if not hosts:
        _Consoles.out.print("no lab host runs", markup=False, emoji=False)
    for host in hosts:
        _Consoles.out.print(
            f"{host.name}: pid {host.pid}, 127.0.0.1:{host.port}, kernel {host.kernel_release}, "
            f"{host.accel.upper()}, up since {host.started_at_utc}",
            markup=False,
            emoji=False,
        )


@labhost_app.command("inventory")
def labhost_inventory(
    output: Annotated[Path, typer.Option("-o", "--output", help="Inventory file to write.")],
    with_local: Annotated[
        str | None,
        typer.Option("--with-local", help="Also put this machine in the inventory, as NAME."),
    ] = None,
) -> None:
    """Write an Ansible inventory of the running lab hosts."""
    from bench.fleet.labhost import running_labhosts, write_inventory

    written = write_inventory(running_labhosts(), output, with_local)
    _Consoles.out.print(f"inventory: {written}", markup=False, emoji=False)


def clean_labhosts(console: Console, dry_run: bool, everything: bool = False) -> bool:
    """``bench clean``: stop the lab hosts bench started; True when one could not be.

    Lab hosts the user keeps (``bench labhost up``) or a live process owns (a test
    session) are left running unless ``everything`` (``bench clean --all``).
    """
    from bench.fleet.labhost_cleanup import held_labhosts, leftovers, remove_all

    try:
        present = leftovers(everything)
        spared = [] if everything else held_labhosts()
        done = present if dry_run else remove_all(everything)
    except BenchError as exc:
        console.print(f"labhost: clean failed: {exc}", markup=False, emoji=False)
        return True
    verb = "would stop" if dry_run else "stopped"
    line = f"labhost: {verb} {len(done)}" + (f": {', '.join(done)}" if done else "")
    if spared:
        line += f"; left {len(spared)} kept or owned by a live process (--all stops them)"
    console.print(line, markup=False, emoji=False)
    return False
