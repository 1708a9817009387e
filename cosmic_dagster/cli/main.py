"""``cosmic-dagster``: the operator's command line.

demo, simulate and the emulators run locally; submit, recon, rerun-failed, backfill and status
talk to a running instance through the webserver's GraphQL API (like the beamline computer
did with the old Prefect server), so they work from any machine that reaches the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from cosmic_dagster import names
from cosmic_dagster.cli.dagster_api import DagsterApi, GraphQLError
from cosmic_dagster.compute.batched_engine import DEVICES
from cosmic_dagster.compute.engines import engine_names
from cosmic_dagster.config import ConfigError, Settings
from cosmic_dagster.domain.scans import relpath_under_root, scan_key
from cosmic_dagster.errors import CosmicError

PIPELINE_ASSETS = [names.RAW_SCAN, names.NERSC_COPY, names.RECONSTRUCTION]


def _recon_config(args: argparse.Namespace) -> dict:
    fields = {
        "engine": args.engine,
        "iterations": args.iterations,
        "probe_refine_start": args.probe_refine_start,
        "probe_defocus_um": args.probe_defocus_um,
        "average_iterations": args.average_iterations,
        "likelihood_iterations": args.likelihood_iterations,
        "device": args.device,
        "force": args.force or None,
    }
    config = {k: v for k, v in fields.items() if v is not None}
    return {"ops": {names.SCAN_STEP: {"config": config}}} if config else {}


def cmd_demo(args: argparse.Namespace) -> int:
    from cosmic_dagster.cli.demo import run_demo

    return run_demo(
        home=Path(args.home),
        n_scans=args.scans,
        interval_s=args.interval,
        port=args.port,
        keep=args.keep,
        timeout_s=args.timeout,
        size=args.size,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from cosmic_dagster.ptycho.simulate import SimulationSpec, simulate_beamline

    spec = getattr(SimulationSpec, args.size)()
    day = dt.date.fromisoformat(args.day) if args.day else None
    for path in simulate_beamline(
        Path(args.root), args.scans, args.interval, spec, day=day, first_scan_number=args.first
    ):
        print(path, flush=True)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else Settings.from_env().beamline_root
    relpath = relpath_under_root(root, args.path)
    key = scan_key(relpath)
    api = DagsterApi(args.url)
    api.add_partition(names.PARTITIONS, key)
    run_id = api.launch_run(
        names.SCAN_JOB,
        partition_key=key,
        run_config=_recon_config(args),
        tags={names.TAG_SUBMITTED_BY: names.BY_CLI},
    )
    print(json.dumps({"scan": key, "relpath": relpath, "run_id": run_id, "run": f"{args.url}/runs/{run_id}"}))
    return 0


def cmd_recon(args: argparse.Namespace) -> int:
    """Reconstruct one scan again, e.g. with other parameters, without copying it again."""
    key = args.scan if not args.scan.endswith(".cxi") else scan_key(args.scan)
    run_id = DagsterApi(args.url).launch_run(
        names.RECON_JOB,
        partition_key=key,
        run_config=_recon_config(args),
        tags={names.TAG_SUBMITTED_BY: names.BY_CLI},
    )
    print(json.dumps({"scan": key, "run_id": run_id, "run": f"{args.url}/runs/{run_id}"}))
    return 0


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    """Backfill the failed partitions of an asset, with the stages before it that those scans
    lack (a scan whose copy failed needs its copy again, not only its reconstruction)."""
    api = DagsterApi(args.url)
    failed = api.partition_statuses(args.asset)["failed"]
    if not failed:
        print(json.dumps({"failed": [], "backfill_id": None}))
        return 0
    stages = PIPELINE_ASSETS[: PIPELINE_ASSETS.index(args.asset) + 1]
    first = next(
        (a for a in stages if set(failed) - set(api.partition_statuses(a)["materialized"])), args.asset
    )
    assets = stages[stages.index(first) :]
    backfill_id = api.launch_backfill(
        failed, assets, tags={names.TAG_ACTION: "rerun-failed", names.TAG_SUBMITTED_BY: names.BY_CLI}
    )
    print(
        json.dumps(
            {
                "failed": failed,
                "assets": assets,
                "backfill_id": backfill_id,
                "backfill": f"{args.url}/runs/b/{backfill_id}",
            }
        )
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    api = DagsterApi(args.url)
    keys = api.partition_keys()
    try:
        selected = keys[keys.index(args.first) : keys.index(args.last) + 1]
    except ValueError:
        raise GraphQLError(
            f"unknown scan key {args.first if args.first not in keys else args.last!r}"
        ) from None
    if not selected:
        raise GraphQLError(f"{args.first} comes after {args.last} (order of registration)")
    backfill_id = api.launch_backfill(
        selected, args.assets, tags={names.TAG_ACTION: "backfill", names.TAG_SUBMITTED_BY: names.BY_CLI}
    )
    print(
        json.dumps(
            {"scans": selected, "backfill_id": backfill_id, "backfill": f"{args.url}/runs/b/{backfill_id}"}
        )
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    api = DagsterApi(args.url)
    if args.json:
        out = {asset: api.partition_statuses(asset) for asset in PIPELINE_ASSETS}
        print(json.dumps(out, indent=2))
        return 0
    from cosmic_dagster.cli.scan_view import format_table, scan_rows

    keys = api.newest_partition_keys(names.RAW_SCAN, args.limit)
    print(format_table(scan_rows(api, keys)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cosmic_dagster.cli.scan_view import format_detail, scan_detail

    key = args.scan
    if key.endswith(".cxi"):
        root = Path(args.root) if args.root else Settings.from_env().beamline_root
        key = scan_key(relpath_under_root(root, key) if Path(key).is_absolute() else key)
    api = DagsterApi(args.url)
    detail = scan_detail(api, key, args.url)
    if not detail.runs and key not in api.partition_keys():
        raise GraphQLError(f"no scan {key!r} is registered (cosmic-dagster status lists the recent ones)")
    print(detail.as_json() if args.json else format_detail(detail))
    return 0


def _run_and_report(api: DagsterApi, job: str, op: str, config: dict, args: argparse.Namespace) -> int:
    """Launch an unpartitioned job through the webserver, wait for it, print its report."""
    run_id = api.launch_job(
        job,
        run_config={"ops": {op: {"config": config}}} if config else {},
        tags={names.TAG_SUBMITTED_BY: names.BY_CLI},
    )
    print(f"{job} run {run_id}: {args.url.rstrip('/')}/runs/{run_id}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while (status := api.run_status(run_id)) not in ("SUCCESS", "FAILURE", "CANCELED"):
        if time.monotonic() > deadline:
            print(f"still {status} after {args.timeout:g} s; follow it in the UI", file=sys.stderr)
            return 1
        time.sleep(1.0)
    for label, value in api.output_metadata(run_id).items():
        print(f"  {label:<14} {value}")
    print(f"{job}: {status}")
    return 0 if status == "SUCCESS" else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    config = {k: v for k, v in (("days", args.days), ("start", args.start), ("end", args.end)) if v}
    return _run_and_report(DagsterApi(args.url), names.RECONCILE_JOB, names.RECONCILE_OP, config, args)


def cmd_prune(args: argparse.Namespace) -> int:
    config: dict = {"delete": args.delete}
    if args.retention_days is not None:
        config["retention_days"] = args.retention_days
    if args.no_reconstruction_needed:
        config["require_reconstruction"] = False
    return _run_and_report(DagsterApi(args.url), names.PRUNE_JOB, names.PRUNE_OP, config, args)


def cmd_deploy_up(args: argparse.Namespace) -> int:
    """The production shape without containers, in the foreground until Ctrl-C."""
    import time

    from cosmic_dagster.cli.deployment import PostgresSettings, start_deployment
    from cosmic_dagster.cli.services import free_port
    from cosmic_dagster.domain.processes import stop_on_signals

    home = Path(args.home).absolute()
    pg = PostgresSettings.from_env()
    print(f"PostgreSQL {pg.user}@{pg.host}:{pg.port}/{pg.db}; DAGSTER_HOME={home / 'dagster_home'}")
    print("starting the code server, dagster-daemon, dagster-webserver ...", flush=True)
    services = start_deployment(home, port=free_port(args.port), code_port=free_port(args.code_port))
    try:
        stop = stop_on_signals()  # from here a stop signal ends the loop below instead of interrupting
        print(f"Dagster UI: {services.url}  (logs in {home / 'logs'}; Ctrl-C stops all)", flush=True)
        restarts: list[float] = []
        while not stop.wait(2.0):
            for name in services.restart_exited():
                restarts = [t for t in restarts if t > time.monotonic() - 300] + [time.monotonic()]
                print(f"{name} exited; restarted it (see {home / 'logs' / name}.log)", flush=True)
                if len(restarts) > 5:
                    print("more than 5 restarts in 5 minutes: stopping everything", file=sys.stderr)
                    return 1
    finally:
        services.stop()
    return 0


def cmd_deploy_pools(args: argparse.Namespace) -> int:
    """Set the pool limits on the instance of DAGSTER_HOME (also creates/migrates its schema)."""
    from dagster import DagsterInstance

    from cosmic_dagster.cli.deployment import pool_limits, set_pool_limits

    limits = pool_limits()
    with DagsterInstance.get() as instance:
        set_pool_limits(instance, limits)
    print(json.dumps(limits))
    return 0


# --- watch: the push trigger (cosmic_dagster/cli/watch.py) -------------------------------------------
def cmd_watch(args: argparse.Namespace) -> int:
    """Register and launch new scans as they complete, until a stop signal (INT, TERM, HUP)."""
    import logging

    from cosmic_dagster.cli.watch import Watcher, path_rejection
    from cosmic_dagster.domain.arrivals import DirectoryLister
    from cosmic_dagster.domain.processes import stop_on_signals

    settings = Settings.from_env()
    root = Path(args.root) if args.root else settings.beamline_root
    if not root.is_dir():
        raise ConfigError(f"beamline root {root} is not a directory")
    if args.poll <= 0:
        raise ConfigError(f"--poll must be > 0, got {args.poll}")
    grace = settings.watcher_grace_s()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    watcher = Watcher(
        DagsterApi(args.url, timeout_s=grace / 6),
        DirectoryLister(root),
        Path(args.state_file) if args.state_file else settings.state_dir / "watch-state.json",
        settle_seconds=settings.settle_seconds,
        grace_seconds=grace,
        recent_days=settings.recent_days,
        max_per_run=settings.max_scans_per_run,
        max_per_poll=settings.max_scans_per_tick,
        accept=path_rejection(root),
    )
    stop = stop_on_signals()
    logging.getLogger("cosmic_dagster.cli.watch").info(
        "watching %s every %g s -> %s", root, args.poll, args.url
    )
    watcher.run(stop, poll_s=args.poll)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosmic-dagster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_url(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", default="http://127.0.0.1:3000", help="Dagster webserver URL")
        return p

    def with_recon(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--engine", choices=engine_names())
        p.add_argument("--iterations", type=int)
        p.add_argument("--probe-refine-start", type=int)
        p.add_argument(
            "--probe-defocus-um", type=float, help="fix the probe defocus (default: the engine chooses it)"
        )
        p.add_argument(
            "--average-iterations", type=int, help="epie: object-averaging sweeps (default: the engine's)"
        )
        p.add_argument(
            "--likelihood-iterations",
            type=int,
            help="epie: iterations of the likelihood finish of object and probe (default: the engine's)",
        )
        p.add_argument("--device", choices=DEVICES, help="batched engine: where it runs")
        p.add_argument(
            "--force", action="store_true", help="new job even if one with these parameters completed"
        )
        return p

    p = sub.add_parser("demo", help="simulated beamline through the real daemon and webserver")
    p.add_argument("--home", default=".demo", help="DAGSTER_HOME and data go here (kept between runs)")
    p.add_argument("--scans", type=int, default=5)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--size", choices=["tiny", "demo", "realistic"], default="demo")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--keep", action="store_true", help="keep the UI running afterwards")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write COSMIC-like scans into a beamline folder at a given rate")
    p.add_argument("root")
    p.add_argument("--scans", type=int, default=5)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between scans")
    p.add_argument("--size", choices=["tiny", "demo", "realistic"], default="demo")
    p.add_argument("--day", help="YYYY-MM-DD (default today)")
    p.add_argument("--first", type=int, default=1, help="first scan number of the day")
    p.set_defaults(func=cmd_simulate)

    p = with_recon(with_url(sub.add_parser("submit", help="register and run one scan file now")))
    p.add_argument("path", help="scan file, under the beamline root")
    p.add_argument("--root", help="beamline root (default: COSMIC_BEAMLINE_ROOT or the data root's)")
    p.set_defaults(func=cmd_submit)

    p = with_recon(with_url(sub.add_parser("recon", help="reconstruct one scan again (new parameters)")))
    p.add_argument("scan", help="scan key or relative path")
    p.set_defaults(func=cmd_recon)

    p = with_url(sub.add_parser("rerun-failed", help="backfill every failed partition of an asset"))
    p.add_argument("--asset", default=names.RECONSTRUCTION, choices=PIPELINE_ASSETS)
    p.set_defaults(func=cmd_rerun_failed)

    p = with_url(sub.add_parser("backfill", help="materialize a range of scans (registration order)"))
    p.add_argument("first")
    p.add_argument("last")
    p.add_argument("--assets", nargs="+", default=PIPELINE_ASSETS)
    p.set_defaults(func=cmd_backfill)

    p = with_url(sub.add_parser("status", help="where the recent scans stand (a table; --json: per asset)"))
    p.add_argument("--json", action="store_true", help="partition keys per asset and status, as JSON")
    p.add_argument("--limit", type=int, default=50, help="how many of the newest scans the table shows")
    p.set_defaults(func=cmd_status)

    def with_wait(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--no-wait", action="store_true", help="print the run id and return")
        p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
        return p

    p = with_wait(
        with_url(sub.add_parser("reconcile", help="find and launch scans the sensor and watcher missed"))
    )
    p.add_argument("--days", type=int, help="day folders back from today (default COSMIC_RECONCILE_DAYS)")
    p.add_argument("--start", help="first day, YYYY-MM-DD")
    p.add_argument("--end", help="last day, YYYY-MM-DD (default today)")
    p.set_defaults(func=cmd_reconcile)

    p = with_wait(
        with_url(sub.add_parser("prune", help="delete verified old beamline copies (dry run by default)"))
    )
    p.add_argument(
        "--delete", action="store_true", help="really delete (default: list what would be deleted)"
    )
    p.add_argument("--retention-days", type=float, help="override COSMIC_RETENTION_DAYS for this run")
    p.add_argument(
        "--no-reconstruction-needed", action="store_true", help="prune scans not reconstructed too"
    )
    p.set_defaults(func=cmd_prune)

    p = with_url(sub.add_parser("show", help="one scan: stages, failure reason, links, parameters, runs"))
    p.add_argument("scan", help="scan key, or the scan file's path (absolute, or under the beamline root)")
    p.add_argument("--root", help="beamline root (default: COSMIC_BEAMLINE_ROOT or the data root's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    deploy = sub.add_parser("deploy", help="the production shape: PostgreSQL, code server, daemon, webserver")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    p = deploy_sub.add_parser("up", help="start all three processes here (DAGSTER_PG_* name the database)")
    p.add_argument("--home", default=".deploy", help="DAGSTER_HOME, logs and (default) data go here")
    p.add_argument("--port", type=int, default=3000, help="webserver port (any free one if taken)")
    p.add_argument("--code-port", type=int, default=4266, help="code server port (any free one if taken)")
    p.set_defaults(func=cmd_deploy_up)
    p = deploy_sub.add_parser("pools", help="set the concurrency pool limits (COSMIC_POOL_LIMITS)")
    p.set_defaults(func=cmd_deploy_pools)

    p = with_url(sub.add_parser("watch", help="register and launch scans as they complete (push trigger)"))
    p.add_argument("--root", help="beamline root (default: COSMIC_BEAMLINE_ROOT or the data root's)")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between looks at the day folders")
    p.add_argument("--state-file", help="cursor, unfinished batches (default: <state dir>/watch-state.json)")
    p.set_defaults(func=cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CosmicError as exc:
        print(f"cosmic-dagster {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP while services ran (children stopped)
        print(f"cosmic-dagster {args.command}: stopped ({exc or 'SIGINT'})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
