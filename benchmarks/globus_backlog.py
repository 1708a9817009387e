"""Backlog of small scans through the Globus emulator: our batching vs one task per file (old flows).

The emulator runs as a subprocess with Globus' limits (3 active tasks per user, 100 pending, 20
requests/s), a per-task start latency and one shared link of fixed bandwidth. Files are small real
files; the bandwidth is scaled so that the link, not the disk, bounds the copy time (the emulator
throttles every byte through it), which keeps the run to a few minutes.

* batched:   GlobusTransfer.copy_batch over the whole backlog (one task).
* runs of N: the pipeline's shape, one copy_batch per Dagster run of N scans, 8 runs at a time.
* per-file:  one Globus task per file as splash_flows_globus did, submitted as fast as the pending
             limit allows and polled in bulk (generous to it: the old flows waited task by task).

Bound = total bytes / bandwidth + one task start latency. Prints medians over --repeat runs
(default 1: a run takes ~2.5 min, mostly the per-file mode).  Usage:
    .venv/bin/python benchmarks/globus_backlog.py [--files 1000] [--size 65536] [--seconds 20] [--repeat 1]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import globus_sdk

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer, make_transfer_client
from cosmic_dagster.transfer.protocol import TransferItem

SOURCE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"
DEST_ID = "df82346e-9a15-11ea-b3c4-0ae144191ee3"
CREDS = GlobusCredentials("bench-client", "bench-secret")


def make_backlog(root: Path, files: int, size: int) -> list[TransferItem]:
    items = []
    for i in range(files):
        day = f"2403{15 + i // 500:02d}"
        relpath = f"2024/03/{day}/NS_{day}{i % 500:03d}_ccdframes_0_0.cxi"
        data = hashlib.shake_256(relpath.encode()).digest(size)
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        items.append(TransferItem(f"scan{i:04d}", relpath, size, hashlib.sha256(data).hexdigest()))
    return items


def start_emulator(
    beamline: Path, dest: Path, mbps: float, latency: float
) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "cosmic_dagster.emulators.globus.server", "--port", "0"]
    cmd += ["--collection", f"{SOURCE_ID}={beamline}", "--collection", f"{DEST_ID}={dest}"]
    cmd += ["--client", f"{CREDS.client_id}:{CREDS.client_secret}"]
    cmd += ["--bandwidth-mbps", str(mbps), "--task-latency-s", str(latency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"emulator failed to start: {line!r}")
    return proc, line.split()[-1] + "/"


def adapter_factory(workdir: Path, mode: str, url: str) -> Callable[[], GlobusTransfer]:
    """A factory of adapters (one per run, like Dagster run workers) sharing one file and ledger."""
    endpoints = workdir / f"endpoints-{mode}.yml"
    endpoints.write_text(
        "globus:\n  globus_endpoints:\n"
        f"    data7012: {{root_path: /, uuid: {SOURCE_ID}}}\n"
        f"    nersc7012: {{root_path: /{mode}, uuid: {DEST_ID}}}\n"
    )
    ledger = Ledger(workdir / f"ledger-{mode}.sqlite")

    def make() -> GlobusTransfer:
        return GlobusTransfer.from_config(
            endpoints,
            "data7012",
            "nersc7012",
            CREDS,
            ledger,
            poll_interval_s=0.5,
            transfer_base_url=url,
            auth_base_url=url,
        )

    return make


def run_batched(workdir: Path, url: str, items: list[TransferItem], tag: str) -> tuple[float, int]:
    make = adapter_factory(workdir, f"batched{tag}", url)
    started = time.monotonic()
    transfer = make()
    report = transfer.copy_batch(items, "backlog")
    assert all(o.ok for o in report.outcomes.values()), "batched copy lost scans"
    return time.monotonic() - started, len(transfer.task_summaries)


def run_runs(workdir: Path, url: str, items: list[TransferItem], per_run: int, tag: str) -> tuple[float, int]:
    make = adapter_factory(workdir, f"runs{tag}", url)
    started = time.monotonic()
    chunks = [items[i : i + per_run] for i in range(0, len(items), per_run)]

    def one_run(chunk: list[TransferItem]) -> bool:
        return all(o.ok for o in make().copy_batch(chunk, "run").outcomes.values())

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(one_run, chunks)), "a run lost scans"
    return time.monotonic() - started, len(chunks)


def run_per_file(url: str, items: list[TransferItem], tag: str) -> tuple[float, int]:
    started = time.monotonic()
    tc = make_transfer_client(CREDS, transfer_base_url=url, auth_base_url=url)
    queue, pending, succeeded = list(items), set(), 0
    while queue or pending:
        while queue and len(pending) < 100:
            item = queue[0]
            data = globus_sdk.TransferData(SOURCE_ID, DEST_ID, label=item.key, sync_level="checksum")
            data["verify_checksum"] = True
            data.add_item(f"/{item.relpath}", f"/per_file{tag}/{item.relpath}")
            try:
                pending.add(tc.submit_transfer(data)["task_id"])
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status != 409:
                    raise
                break
            queue.pop(0)
        time.sleep(0.5)
        ids = sorted(pending)
        for start in range(0, len(ids), 50):
            group = ids[start : start + 50]
            listing = tc.task_list(filter=f"task_id:{','.join(group)}/status:SUCCEEDED,FAILED", limit=50)
            for task in listing:
                assert task["status"] == "SUCCEEDED", task["task_id"]
                pending.discard(task["task_id"])
                succeeded += 1
    assert succeeded == len(items)
    return time.monotonic() - started, succeeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per scan file")
    parser.add_argument("--seconds", type=float, default=20.0, help="link time of the whole backlog")
    parser.add_argument("--latency", type=float, default=0.3, help="per-task start latency (s)")
    parser.add_argument("--run-size", type=int, default=20, help="scans per Dagster run")
    parser.add_argument("--repeat", type=int, default=1, help="measure each mode N times (medians)")
    args = parser.parse_args()
    total = args.files * args.size
    mbps = total * 8 / 1e6 / args.seconds
    bound = total / (mbps * 1e6 / 8) + args.latency
    workdir = Path(tempfile.mkdtemp(prefix="globus-backlog-"))
    beamline, dest = workdir / "beamline", workdir / "dest"
    dest.mkdir(parents=True)
    proc = None
    try:
        items = make_backlog(beamline, args.files, args.size)
        proc, url = start_emulator(beamline, dest, mbps, args.latency)
        print(f"backlog: {args.files} scans x {args.size} B = {total / 1e6:.1f} MB (small real files)")
        print(f"emulator: link {mbps:.2f} Mbit/s shared by all tasks (it bounds the time, not the disk),")
        print(f"          task start latency {args.latency} s, 3 active tasks/user, 100 pending, 20 req/s")
        times: dict[str, list[float]] = {"batched": [], "runs": [], "per_file": []}
        for r in range(args.repeat):
            seconds, tasks = run_batched(workdir, url, items, str(r))
            times["batched"].append(seconds)
            print(f"batched   (one copy_batch):        {seconds:7.1f} s  {tasks} task(s)")
            seconds, tasks = run_runs(workdir, url, items, args.run_size, str(r))
            times["runs"].append(seconds)
            print(f"runs of {args.run_size:<3d}(8 concurrent runs):   {seconds:7.1f} s  {tasks} tasks")
            seconds, tasks = run_per_file(url, items, str(r))
            times["per_file"].append(seconds)
            print(f"per-file  (old flows):             {seconds:7.1f} s  {tasks} tasks")
        batched, runs, per_file = (statistics.median(times[k]) for k in ("batched", "runs", "per_file"))
        ratio = batched / bound
        print(
            f"medians over {args.repeat} run(s): batched {batched:.1f} s, "
            f"runs {runs:.1f} s, per-file {per_file:.1f} s"
        )
        print(f"physical bound (bytes/bandwidth + one latency): {bound:.1f} s")
        print(
            f"batched/bound = {ratio:.2f}   runs/bound = {runs / bound:.2f}   "
            f"per-file/batched = {per_file / batched:.1f}x"
        )
        print(
            f"RESULT batched_s={batched:.1f} per_file_s={per_file:.1f} bound_s={bound:.1f} ratio={ratio:.2f}"
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
