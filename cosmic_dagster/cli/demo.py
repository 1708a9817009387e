"""``make demo``: a simulated COSMIC beamline through the real Dagster daemon, end to end.

Starts the daemon, the webserver and the scan watcher on a persistent DAGSTER_HOME (SQLite),
writes scans the way the beamline does (``.tmp`` then rename), lets the watcher launch them (the
arrival sensor is the safety net), follows every scan through
detected -> registered -> copied -> reconstructed -> checked, then prints a summary table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

from cosmic_dagster import names
from cosmic_dagster.cli.services import DagsterServices, free_port, prepare_home
from cosmic_dagster.domain.scans import scan_key


def _next_scan_number(day_dir: Path) -> int:
    numbers = [
        int(m.group(1)) for p in day_dir.glob("NS_*.cxi") if (m := re.match(r"NS_\d{6}(\d{3})_", p.name))
    ]
    return max(numbers, default=0) + 1


def run_demo(
    *,
    home: Path,
    n_scans: int = 5,
    interval_s: float = 2.0,
    port: int = 3000,
    keep: bool = False,
    timeout_s: float = 600.0,
    size: str = "demo",
) -> int:
    from cosmic_dagster.ptycho.simulate import SimulationSpec, cosmic_relpath

    home = home.absolute()
    dagster_home, data_root = home / "dagster_home", home / "data"
    prepare_home(dagster_home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "COSMIC_PROFILE": "local",
        "COSMIC_DATA_ROOT": str(data_root),
        "COSMIC_SETTLE_SECONDS": os.environ.get("COSMIC_SETTLE_SECONDS", "1"),
        # The watcher launches fresh scans at once; the sensor is the safety net after this grace.
        "COSMIC_SENSOR_GRACE_S": os.environ.get("COSMIC_SENSOR_GRACE_S", "30"),
    }
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "COSMIC_PROFILE", "COSMIC_DATA_ROOT")})
    beamline = data_root / "beamline"
    today = dt.date.today()
    first = _next_scan_number(beamline / cosmic_relpath(today, 1).rsplit("/", 1)[0])
    if first + n_scans > 999:
        raise SystemExit("today's folder already holds 999 scans; remove .demo/data to start afresh")
    relpaths = [cosmic_relpath(today, first + i) for i in range(n_scans)]
    keys = [scan_key(r) for r in relpaths]
    spec = getattr(SimulationSpec, size)()

    services = DagsterServices(env=env, log_dir=home / "logs", port=free_port(port))
    print(f"DAGSTER_HOME={dagster_home}\nbeamline folder: {beamline}")
    print("starting dagster-daemon, dagster-webserver and the scan watcher ...", flush=True)
    services.start()
    services.start_watcher()
    print(f"Dagster UI: {services.url}  (logs in {home / 'logs'})", flush=True)
    try:
        return _simulate_and_follow(services, beamline, relpaths, keys, spec, interval_s, timeout_s, keep)
    finally:
        services.stop()  # with --keep: once the user interrupts


def _simulate_and_follow(
    services: DagsterServices,
    beamline: Path,
    relpaths: list[str],
    keys: list[str],
    spec: object,
    interval_s: float,
    timeout_s: float,
    keep: bool,
) -> int:
    import dagster as dg

    from cosmic_dagster.defs.progress import scan_progress
    from cosmic_dagster.ptycho.simulate import write_scan

    def beamline_writer() -> None:
        for i, relpath in enumerate(relpaths):
            write_scan(beamline / relpath, replace(spec, seed=spec.seed + i))
            time.sleep(interval_s)

    started = time.monotonic()
    threading.Thread(target=beamline_writer, daemon=True).start()
    print(f"beamline: writing {len(relpaths)} scans, one every {interval_s:g} s", flush=True)
    instance = dg.DagsterInstance.get()
    shown: dict[str, str] = {}
    progress: dict = {}
    while time.monotonic() - started < timeout_s:
        detected = set(instance.get_dynamic_partitions(names.PARTITIONS))
        progress = scan_progress(instance, keys)
        for key in keys:
            stage = progress[key].stage if key in detected else "waiting"
            if shown.get(key) != stage:
                print(f"[{time.monotonic() - started:6.1f}s] {key:<30} {stage}", flush=True)
                shown[key] = stage
        if all(stage == "checked" for stage in shown.values()) and len(shown) == len(keys):
            break
        time.sleep(1.0)
    _print_table(progress, keys)
    print(f"\nDagster UI: {services.url}" + ("  (kept running; Ctrl-C to stop)" if keep else ""))
    if not all(shown.get(k) == "checked" and progress[k].passed for k in keys):
        print(
            f"demo FAILED: not every scan was reconstructed and passed its checks within {timeout_s:.0f} s;"
            f" see the failed runs in the UI and the logs in {services.log_dir}"
        )
        return 1
    done = f"demo OK: {len(keys)} scans reconstructed and checked in {time.monotonic() - started:.0f} s"
    if not keep:
        print(done)
        return 0
    # From "demo OK" on, a stop (Ctrl-C, SIGTERM, SIGHUP) is the normal end: say it inside the
    # block that takes it, so a stop sent right after reading the line still exits 0.
    with contextlib.suppress(KeyboardInterrupt):
        print(done, flush=True)
        while True:
            time.sleep(3600)
    return 0


def _print_table(progress: dict, keys: list[str]) -> None:
    header = f"{'scan':<30} {'MB':>7} {'copy s':>7} {'recon s':>8} {'obj err':>8} {'F drop':>7}  preview"
    print("\n" + header + "\n" + "-" * len(header))
    for key in keys:
        meta = progress[key].metadata if key in progress else {}
        raw, copy, recon = (meta.get(a, {}) for a in (names.RAW_SCAN, names.NERSC_COPY, names.RECONSTRUCTION))
        obj, drop = recon.get("object_error"), recon.get("fourier_error_drop")
        cells = [
            f"{key:<30}",
            f"{raw.get('bytes', 0) / 1e6:7.2f}",
            f"{copy.get('seconds', float('nan')):7.2f}",
            f"{recon.get('run_s', float('nan')):8.2f}",
            f"{obj:8.3f}" if obj is not None else f"{'-':>8}",
            f"{drop:6.1f}x" if drop else f"{'-':>7}",
            f" {recon.get('preview_path', '-')}",
        ]
        print(" ".join(cells))
